# The flake's outputs, for flake.nix to return (flake.nix itself only names the inputs).
#
#   outputs = inputs: import ./nix/flake-outputs.nix inputs;
#
# Every per-variant output is derived from engines/**/*.yaml at evaluation time
# (nix/lib/discover.nix), so adding a variant file adds `<id>`, `<id>-image` and `<id>-weights`
# with no Nix edit. `legacyPackages.<system>.withMirrors [ "file:///srv/models" ]` gives the same
# packages with weight files fetched from mirrors (same hashes, hence the same store paths).
{ self ? null, nixpkgs, nix2container, poetry2nix, systems ? [ "x86_64-linux" "aarch64-linux" ], ... }:
let
  b = builtins;
  src = ../.;
  variants = import ./lib/discover.nix { engines = src + "/engines"; };

  # An id that would shadow another output is refused at evaluation, naming the file.
  reserved = [ "default" ];
  outputNames = id: [ id "${id}-image" "${id}-weights" ];
  owners = b.groupBy (o: o.name) (b.concatMap (id: map (name: { inherit name id; }) (outputNames id)) (b.attrNames variants));
  clash = b.filter (n: b.length owners.${n} > 1 || b.elem n reserved) (b.attrNames owners);
  checked =
    if clash == [ ] then variants
    else
      let n = b.head clash; in
      throw "flake output '${n}' is claimed by ${b.concatStringsSep " and " (map (o: "${variants.${o.id}.file} (id ${o.id})") owners.${n})}${if b.elem n reserved then " and is reserved" else ""}; rename the variant";

  forSystems = f: b.listToAttrs (map (system: { name = system; value = f system; }) systems);
  # Parsed once for every system (fromTOML of the lock takes seconds).
  lock = b.fromTOML (b.readFile (src + "/poetry.lock"));
  outputsFor = mirrors: forSystems (system: import ./per-system.nix {
    inherit system nixpkgs nix2container poetry2nix src mirrors lock;
    variants = checked;
  });
  outputs = outputsFor [ ];
  part = name: b.mapAttrs (_: o: o.${name}) outputs;
in
{
  packages = part "packages";
  apps = part "apps";
  checks = part "checks";
  devShells = part "devShells";
  formatter = part "formatter";

  # WHY legacyPackages and not `lib`: `nix flake check` warns about an unknown `lib` output, and
  # these are per-system anyway (`nix eval .#variants` then works for the current system).
  legacyPackages = forSystems (system: {
    # { <id> = { spec; family; stage; dir; file; }; }: what the outputs are derived from.
    variants = checked;
    # This system's packages with weight files fetched from mirrors: base URLs under which a
    # weight file is at <mirror>/<repo>/resolve/<revision>/<file> (same hashes, same store paths).
    #   (flake.legacyPackages.x86_64-linux.withMirrors [ "file:///srv/models" ]).whisper-base-image
    withMirrors = mirrors: (outputsFor mirrors).${system}.packages;
  });
}
