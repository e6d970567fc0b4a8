"""Pure-torch core of Personalized Safety Alignment (PSA): no ComfyUI imports here.

Grouped by concern:

- ``psa_model.adapter`` — the adapter itself: the UNet layer table (``layer_map``), the modules
  (``modules``), the user-branch math (``attention``) and the attention patches that inference
  and training share (``patch``).
- ``psa_model.formats`` — adapter files (``adapter_file``: native and reference layouts) and
  the converter CLI (``convert``).
- ``psa_model.profiles`` — user profiles: profile and embedding files (``profile``), the
  attribute schema (``schema``), forbidden-category policies (``policy``), the Sage nearest-user
  route (``sage_nearest``), the LLM encoder and its cache.
- ``psa_model.sampling`` — samplers ComfyUI lacks, in its σ-space: PLMS and its "leading"
  schedule (``plms``), the reference's SD1.5 sampler.
"""
