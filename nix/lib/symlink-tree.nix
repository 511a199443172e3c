# Build a directory of symlinks into the store WITHOUT nixpkgs and without a shell:
#
#   symlinkTree { name = "whisper-base-weights"; top = "whisper-base"; links = { "model.bin" = drv; }; }
#   => $out/whisper-base/model.bin -> /nix/store/...-model.bin
#
# Link names may contain `/` ("transcribe/whisper/engine.py"): the parent directories are created.
# `links = { }` gives an empty directory $out/<top> (a variant with no weights still has a weights
# output, so that every variant has the same three flake outputs).
#
# WHY this way: with no nixpkgs there is no stdenv, coreutils or even /bin/sh guaranteed in the
# sandbox, and builtin:buildenv skips plain files. The builtin builder `builtin:unpack-channel`
# unpacks a tar archive into $out and renames its single top-level entry to `channelName`; Nix has
# it on every version (2.8 ... current) and lets any derivation use it. A tar archive of symlinks
# and directories needs no file data, and a v7 tar header can be written with no NUL byte at all
# (every field padded with spaces or with `./` and `/.` path components), so it can be produced by
# `builtins.toFile`. Nix then registers the link targets as references (their hashes appear in
# the links).
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

  # One 512-byte v7 tar header: type "2" (symlink `name` -> `target`), "5" (directory `name`) or "x"
  # (pax extended header of `size` bytes).
  header = { type, mode, name, target ? null, size ? 0 }:
    let
      before = fill100 "entry name" "./" name + "000${mode} " + "0000000 " + "0000000 "
        + padLeft 11 (octal size) + " " + "00000000000 ";
      after = type + (if target == null then spaces 100 else fill100 "link target" "/." target) + spaces 255;
      sum = checksumOf before + 8 * 32 + checksumOf after;
    in
    before + padLeft 6 (octal sum) + "  " + after;

  # A pax record "<len> key=value\n", where <len> counts its own digits too.
  paxRecord = key: value:
    let
      body = " ${key}=${value}\n";
      fit = n: let total = b.stringLength (toString n) + b.stringLength body; in if total == n then n else fit total;
    in
    toString (fit (b.stringLength body + 1)) + body;

  # Names and link targets longer than a v7 field (100 characters, e.g. a store path with a long
  # file name) go in a pax extended header before the entry; its data needs no NUL either (the
  # padding to 512 bytes is read past, not parsed).
  long = s: b.stringLength s > 100;
  withPax = records: entry:
    let
      data = b.concatStringsSep "" records;
      size = b.stringLength data;
      pad = if size - (size / 512) * 512 == 0 then 0 else 512 - (size - (size / 512) * 512);
    in
    if records == [ ] then entry
    else header { type = "x"; mode = "0644"; name = "PaxHeader"; inherit size; } + data + spaces pad + entry;

  symlinkHeader = name: target:
    withPax
      ((if long name then [ (paxRecord "path" name) ] else [ ]) ++ (if long target then [ (paxRecord "linkpath" target) ] else [ ]))
      (header {
        type = "2";
        mode = "0777";
        name = if long name then "long-name" else name;
        target = if long target then "long-target" else target;
      });
  dirHeader = name:
    let n = "${name}/"; in
    withPax (if long n then [ (paxRecord "path" n) ] else [ ]) (header { type = "5"; mode = "0755"; name = if long n then "long-name/" else n; });

  # "a/b/c" -> [ "a" "a/b" ]: the directories a link needs.
  parentsOf = path:
    let
      parts = b.filter b.isString (b.split "/" path);
      k = b.length parts;
    in
    b.genList (i: b.concatStringsSep "/" (b.genList (j: b.elemAt parts j) (i + 1))) (k - 1);

  checkName = top: file:
    if b.match "([A-Za-z0-9+._@=-]+/)*[A-Za-z0-9+._@=-]+" file == null || b.match "(.*/)?\\.\\.?(/.*)?" file != null
    then throw "symlink-tree ${top}: link name '${file}' must be a relative path of plain components"
    else file;

  symlinkTree = { name, top, links }:
    let
      files = map (checkName top) (b.attrNames links);
      dirs = b.attrNames (b.listToAttrs (map (d: { name = d; value = null; }) (b.concatMap parentsOf files)));
      archive = b.toFile "${name}.tar" (b.concatStringsSep "" (
        [ (dirHeader top) ]
        ++ map (d: dirHeader "${top}/${d}") dirs
        ++ map (file: symlinkHeader "${top}/${file}" (b.unsafeDiscardStringContext "${links.${file}}")) files
      ));
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
