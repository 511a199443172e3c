# Every engine variant of this repository, read from engines/ at evaluation time:
#
#   nix-instantiate --eval --strict --json nix/variants.nix
#
# prints { <id> = { spec; family; stage; dir; file; }; } (the discovery rules and the YAML reader
# are in nix/lib/discover.nix and nix/lib/yaml.nix). Tools and tests diff it against the Python
# catalog; the flake derives all of its per-variant outputs from it.
import ./lib/discover.nix { engines = ../engines; }
