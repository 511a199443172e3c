# The text of nix/pyproject.poetry2nix.toml (see nix/lib/pep621.nix):
#   nix eval --raw -f nix/pyproject.poetry2nix.nix > nix/pyproject.poetry2nix.toml
(import ./lib/pep621.nix).render (builtins.fromTOML (builtins.readFile ../pyproject.toml))
