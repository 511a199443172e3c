# Build a directory of symlinks into the store WITHOUT nixpkgs and without a shell:
#
#   symlinkTree { name = "whisper-base-weights"; top = "whisper-base"; links = { "model.bin" = drv; }; }
#   => $out/whisper-base/model.bin -> /nix/store/...-model.bin
#
# WHY this way: with no nixpkgs there is no stdenv, coreutils or even /bin/sh guaranteed in the
# sandbox, and builtin:buildenv skips plain files. The builtin builder `builtin:unpack-channel`
# unpacks a tar archive into $out and renames its single top-level entry to `channelName`; Nix has
# it on every version (2.8 ... current) and lets any derivation use it. A tar archive of symlinks
# needs no file data, and a v7 tar header can be written with no NUL byte at all (every field padded
# with spaces or with `./` and `/.` path components), so it can be produced by `builtins.toFile`.
# Nix then registers the link targets as references (their hashes appear in the links).
let
  b = builtins;

  ascii = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
  codes = b.listToAttrs (b.genList (i: { name = b.substring i 1 ascii; value = 32 + i; }) (b.stringLength ascii));
  chars = s: b.genList (i: b.substring i 1 s) (b.stringLength s);
  checksumOf = s: b.foldl' (acc: c: acc + codes.${c}) 0 (chars s);

  spaces = k: b.concatStringsSep "" (b.genList (_: " ") k);
  repeat = k: s: b.concatStringsSep "" (b.genList (_: s) k);
  octal = v: if v < 8 then toString v else octal (v / 8) + toString (v - (v / 8) * 8);
  padLeft = width: s: repeat (width - b.stringLength s) "0" + s;

  # `path` padded to exactly 100 characters with path components that change nothing.
  fill100 = what: prefix: path:
    let pad = 100 - b.stringLength path; in
    if pad < 0 then throw "symlink-tree: ${what} '${path}' is longer than 100 characters"
    else if b.match "[ -~]*" path == null then throw "symlink-tree: ${what} '${path}' must be printable ASCII"
    else repeat (pad / 2) prefix + (if pad - (pad / 2) * 2 == 1 then "/" else "") + path;

  # One 512-byte v7 tar header for a symlink `name` -> `target`.
  header = name: target:
    let
      before = fill100 "entry name" "./" name + "0000777 " + "0000000 " + "0000000 " + "00000000000 " + "00000000000 ";
      after = "2" + fill100 "link target" "/." target + spaces 255;
      sum = checksumOf before + 8 * 32 + checksumOf after;
    in
    before + padLeft 6 (octal sum) + "  " + after;

  symlinkTree = { name, top, links }:
    let
      archive = b.toFile "${name}.tar" (b.concatStringsSep "" (map
        (file: header "${top}/${file}" (b.unsafeDiscardStringContext "${links.${file}}"))
        (b.attrNames links)));
    in
    derivation {
      inherit name;
      system = "builtin";
      builder = "builtin:unpack-channel";
      src = archive;
      channelName = top;
      # The link targets: built first, and kept as this output's references.
      targets = b.attrValues links;
      preferLocalBuild = true;
      allowSubstitutes = false;
    };
in
symlinkTree
