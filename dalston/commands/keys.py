"""`dalston keys create|add|hash`: manage the keys file (SHA-256 digests only; the key is shown once)."""

from __future__ import annotations

import argparse
import os
import sys

from dalston.auth import KEY_PREFIX, KEYS_FILE_ENV, KeysFileError, KeyStore, append_digest, hash_key, new_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="make a new key, print it once, store its hash")
    add = sub.add_parser("add", help="store the hash of a key you chose (read from stdin)")
    for p in (create, add):
        p.add_argument("--keys-file", default=os.environ.get(KEYS_FILE_ENV),
                       help=f"keys file to append to (default ${KEYS_FILE_ENV})")
        p.add_argument("--comment", help="a note stored above the digest (who/what the key is for)")
    hash_ = sub.add_parser("hash", help="print the digest of a key read from stdin (for config management)")
    hash_.set_defaults(keys_file=None)


def run(args: argparse.Namespace) -> int:
    if args.action == "hash":
        print(hash_key(sys.stdin.readline().strip()))
        return 0
    if not args.keys_file:
        print(f"dalston keys: give --keys-file PATH or set {KEYS_FILE_ENV}", file=sys.stderr)
        return 2
    if os.path.exists(args.keys_file):
        try:
            KeyStore.from_file(args.keys_file)  # refuse to append to a file the server would reject
        except KeysFileError as exc:
            print(f"dalston keys: {exc}", file=sys.stderr)
            return 2
    if args.action == "create":
        key = new_key()
    else:
        key = sys.stdin.readline().strip()
        if not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + 8:
            print(f"dalston keys add: a key must start with '{KEY_PREFIX}' and have at least 8 more characters", file=sys.stderr)
            return 2
    append_digest(args.keys_file, key, args.comment)
    if args.action == "create":
        print(key)
        print(f"stored its SHA-256 in {args.keys_file}; this key is not shown again", file=sys.stderr)
    return 0
