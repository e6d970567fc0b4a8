"""The operator policy tests' configuration: users, tokens and the proxy secret (docs/deployment.md)."""
from __future__ import annotations

from psa_model.operator.identity import sha256_hex

ALICE_TOKEN, ROOT_TOKEN, SECRET = "alice-token-0123456789", "root-token-0123456789", "proxy-secret-abcdef"


def raw_config(**policy) -> dict:
    """Alice (strict: adapter pinned, minimum psa_scale 1, a token), Bob (minimum 0.5), root (admin)."""
    return {
        "identity": {"proxy_user_header": "X-PSA-User", "proxy_secret_header": "X-PSA-Secret",
                     "proxy_secret_sha256": sha256_hex(SECRET)},
        "policy": {"allowed_nodes": ["CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "VAEDecode",
                                     "SaveImage", "KSampler", "LoraLoaderModelOnly", "CFGGuider", "PSAModelPatcher",
                                     "PSALoadProfile", "PSAProfileBatch", "PSAApplyProfile", "PSAKSampler",
                                     "AnySwitch"], **policy},
        "users": {"alice": {"profile": "alice.json", "adapter": "psa.safetensors", "min_psa_scale": 1.0,
                            "token_sha256": sha256_hex(ALICE_TOKEN)},
                  "bob": {"profile": "bob.json", "min_psa_scale": 0.5},
                  "root": {"admin": True, "token_sha256": sha256_hex(ROOT_TOKEN)}},
    }
