"""``python -m psa_model.operator token`` prints a new token and its digest;
``python -m psa_model.operator check FILE`` checks a configuration file (docs/deployment.md)."""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_config
from .identity import new_token, sha256_hex


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m psa_model.operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("token", help="print a new random token and the token_sha256 line for the configuration")
    check = sub.add_parser("check", help="check a configuration file and list its users")
    check.add_argument("file")
    args = parser.parse_args(argv)
    if args.command == "token":
        token = new_token()
        print(f"token:        {token}\ntoken_sha256 = \"{sha256_hex(token)}\"")
        return 0
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for user in config.describe_users():
        role = "admin" if user["admin"] else f"profile {user['profile']}, min psa_scale {user['min_psa_scale']:g}"
        print(f"{user['name']}: {role}")
    print(f"ok: {len(config.users)} user(s); proxy {'on' if config.proxy else 'off'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
