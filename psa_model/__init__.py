"""Pure-torch core of Personalized Safety Alignment (PSA): no ComfyUI imports here.

Modules: ``layer_map`` (the UNet layer table), ``adapter`` (the modules), ``attention``
(the user-branch math), ``patch`` (the attention patches inference and training share),
``formats`` (adapter files), ``profiles`` (user embeddings), ``convert`` (CLI).
"""
