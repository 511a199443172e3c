# A pure-builtins reader for the YAML subset that variant files are written in.
#
# WHY: Nix has no `builtins.fromYAML`, and import-from-derivation (running a YAML tool in a build)
# cannot work offline or in pure evaluation. The subset is documented in docs/NIX.md; the Python
# loader (dalston/yamlsubset.py) rejects every construct this reader does not implement, and a
# differential test (tests/nix/test_yaml_differential.py) holds both readers equal, so a file that
# validates is a file that evaluates, to the same value.
#
# Anything outside the subset fails evaluation with `<file>:<line>: <what is unsupported>`.
#
# Interface:
#   parse    : source (string, used in errors) -> text -> attrset
#   fromFile : path -> attrset
let
  b = builtins;

  # "\n" repeated k times.
  newlines = k: b.concatStringsSep "" (b.genList (_: "\n") k);

  trimRight = s: b.head (b.match "(.*[^ \t]|)[ \t]*" s);
  trimLeft = s: b.head (b.match "[ \t]*(.*)" s);
  startsWith = p: s: b.substring 0 (b.stringLength p) s == p;
  rest = c: s: b.substring c (b.stringLength s) s;

  # Characters that may not begin a plain scalar (YAML indicators), and what we say about them.
  indicatorMessage = ch:
    {
      "{" = "unsupported: flow mappings ({...}); use a block mapping";
      "&" = "unsupported: anchors (&name)";
      "*" = "unsupported: aliases (*name)";
      "!" = "unsupported: tags (!tag)";
      "?" = "unsupported: complex mapping keys (?)";
      "|" = "unsupported: block scalar here (put | or > right after `key:` or `- `)";
      ">" = "unsupported: block scalar here (put | or > right after `key:` or `- `)";
      "%" = "unsupported: directives (%)";
      "@" = "invalid: a plain scalar cannot start with '@'; quote it";
      "`" = "invalid: a plain scalar cannot start with '`'; quote it";
      "," = "invalid: a plain scalar cannot start with ','; quote it";
      "]" = "invalid: unexpected ']'";
      "}" = "invalid: unexpected '}'";
      ":" = "invalid: a plain scalar cannot start with ':'; quote it";
      "#" = "invalid: missing value before comment";
    }.${ch} or null;

  # Plain scalars whose YAML 1.1 meaning (PyYAML, which the Python side and most tools use) differs
  # from their YAML 1.2 core meaning: refused, as the Python loader refuses them (`yes`, `010`, `1e3`,
  # `1_000`, `1:20`, `2024-01-01`...). Mirrors PyYAML's implicit resolvers.
  ambiguous = s:
    let
      int11 = "[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+";
      float11 = "[-+]?[0-9][0-9_]*\\.[0-9_]*([eE][-+][0-9]+)?|\\.[0-9_]+([eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\\.[0-9_]*";
      time11 = "[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]*)?([ \t]*(Z|[-+][0-9]{1,2}(:[0-9]{2})?))?";
      coreFloat = "[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?";
      sameFloat = "[-+]?[0-9]+\\.[0-9]*([eE][-+][0-9]+)?|\\.[0-9]+([eE][-+][0-9]+)?";
      octal = b.match "[-+]?0+([0-7]*)" s;
    in
    b.match "yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|<<|=" s != null
    || b.match time11 s != null
    || ((b.match int11 s != null || b.match float11 s != null)
        && (b.match ".*[_:].*|[-+]?0[bx].*" s != null || (octal != null && b.stringLength (b.head octal) >= 2)))
    || b.match "[-+]?0[0-9]*[89][0-9]*" s != null
    || (b.match coreFloat s != null && b.match "[-+]?[0-9]+" s == null && b.match sameFloat s == null);

  # YAML 1.2 core schema: the value of a plain scalar (the Python loader rejects the ones whose
  # YAML 1.1 value differs, so both readers agree on everything they accept).
  resolvePlain = err: s:
    let
      int = b.match "([-+]?)0*([0-9]+)" s;
      float = b.match "([-+]?)0*([0-9]*)(\\.([0-9]*))?([eE][-+]?[0-9]+)?" s;
      signOf = m: if b.head m == "-" then "-" else "";
    in
    if b.match "[-+]?\\.(inf|Inf|INF)|\\.(nan|NaN|NAN)" s != null then err "unsupported: '${s}' (infinity and NaN)"
    else if b.match "0o[0-7]+|0x[0-9a-fA-F]+" s != null then err "unsupported: octal/hex integer '${s}'; write it in decimal"
    else if ambiguous s then err "ambiguous plain scalar '${s}' (YAML 1.1 and 1.2 differ); quote it"
    else if b.match "~|null|Null|NULL|" s != null then null
    else if b.match "true|True|TRUE" s != null then true
    else if b.match "false|False|FALSE" s != null then false
    else if int != null then b.fromJSON (signOf int + b.elemAt int 1)
    else if b.match "0o[0-7]+|0x[0-9a-fA-F]+" s != null then err "unsupported: octal/hex integer '${s}'; write it in decimal"
    else if b.match "[-+]?\\.(inf|Inf|INF)|\\.(nan|NaN|NAN)" s != null then err "unsupported: '${s}' (infinity and NaN)"
    else if float != null && b.match "[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?" s != null then
      let
        whole = b.elemAt float 1;
        frac = b.elemAt float 3;
        exp = b.elemAt float 4;
      in
      b.fromJSON (signOf float + (if whole == "" then "0" else whole) + "."
        + (if frac == null || frac == "" then "0" else frac) + (if exp == null then "" else exp))
    else s;

  # Double-quoted escapes the subset allows (the same table as the Python loader).
  escapes = { "\\" = "\\"; "\"" = "\""; "/" = "/"; "n" = "\n"; "t" = "\t"; };

  parse = source: text:
    let
      lines = b.filter b.isString (b.split "\n" text);
      n = b.length lines;
      line = i: b.elemAt lines i;
      err = i: msg: throw "${source}:${toString (i + 1)}: ${msg}";

      indentOf = l: b.stringLength (b.head (b.match "( *).*" l));
      blank = l: b.match "[ ]*(#.*)?" l != null;
      spaceOnly = l: b.match " *" l != null;
      skip = i: if i >= n then n else if blank (line i) then skip (i + 1) else i;
      isDash = s: s == "-" || startsWith "- " s;
      isComment = s: s == "" || startsWith "#" s;

      # Whole-document checks, done once before parsing.
      precheck = b.foldl'
        (ok: i:
          let l = line i; in
          if b.match " *\t.*" l != null then err i "tabs are not allowed for indentation"
          else if b.match ".*\r.*" l != null then err i "unsupported: carriage returns (use \\n line ends)"
          else if b.match "(---|\\.\\.\\.)([ \t].*)?|%.*" l != null then
            err i "unsupported: document markers and directives (---, ..., %YAML)"
          else ok)
        true
        (b.genList (i: i) n);

      # --- scalars on one line -------------------------------------------------------------

      # A quoted scalar at the start of s: { v; after; } (after = the text behind the closing quote).
      quoted = i: s:
        if startsWith "\"" s then
          let m = b.match "\"(([^\"\\\\]|\\\\.)*)\"(.*)" s; in
          if m == null then err i "unsupported: unterminated or multi-line double-quoted scalar"
          else {
            v = b.concatStringsSep "" (map
              (p: if b.isString p then p
                else escapes.${b.head p} or (err i "unsupported: escape '\\${b.head p}' (only \\\\ \\\" \\/ \\n \\t)"))
              (b.split "\\\\(.)" (b.head m)));
            after = b.elemAt m 2;
          }
        else
          let m = b.match "'(([^']|'')*)'(.*)" s; in
          if m == null then err i "unsupported: unterminated or multi-line single-quoted scalar"
          else { v = b.replaceStrings [ "''" ] [ "'" ] (b.head m); after = b.elemAt m 2; };

      endsLine = s: b.match "[ \t]*(#.*)?" s != null;

      # A plain scalar (already cut at its end): check and resolve it.
      plain = i: flow: t:
        let first = b.substring 0 1 t; msg = indicatorMessage first; in
        if t == "" then err i "invalid: empty item"
        else if msg != null then err i msg
        else if t == "-" || startsWith "- " t then err i "invalid: a sequence entry is not allowed here"
        else if b.match ".*:([ \t].*)?" t != null then
          err i (if flow then "unsupported: flow sequences may hold only scalars (found `key: value`)"
                 else "invalid: mapping values are not allowed here; quote the scalar")
        else if flow && b.match ".*[?].*" t != null then err i "unsupported: '?' inside a flow sequence; quote the item"
        else resolvePlain (err i) t;

      # Text of a plain scalar in block context: up to a comment, trailing blanks removed.
      plainText = s: trimRight (b.head (b.split "[ \t]#" s));

      # A flow sequence of scalars, all on this line: "[a, 'b', 3]".
      flowSeq = i: s:
        let
          go = t: acc:
            let u = trimLeft t; in
            if u == "" then err i "unsupported: flow sequences spanning several lines"
            else if startsWith "]" u then { v = acc; after = rest 1 u; }
            else
              let
                item =
                  if startsWith "\"" u || startsWith "'" u then quoted i u
                  else if startsWith "[" u then err i "unsupported: flow sequences may hold only scalars"
                  else if startsWith "{" u then err i "unsupported: flow mappings ({...}); use a block mapping"
                  else
                    let m = b.match "([^],[{}]*)(.*)" u; raw = b.head m; in
                    if b.match ".*[ \t]#.*" raw != null then err i "unsupported: flow sequences spanning several lines"
                    else { v = plain i true (trimRight raw); after = b.elemAt m 1; };
                next = trimLeft item.after;
              in
              if startsWith "," next then go (rest 1 next) (acc ++ [ item.v ])
              else if startsWith "]" next then { v = acc ++ [ item.v ]; after = rest 1 next; }
              else err i "invalid: expected ',' or ']' in flow sequence";
          r = go (rest 1 s) [ ];
        in
        if endsLine r.after then r.v else err i "invalid: unexpected text after flow sequence";

      # A scalar that must fill the rest of line i (after a key, after "- ", or on its own line).
      inlineValue = i: s:
        if startsWith "[" s then flowSeq i s
        else if startsWith "\"" s || startsWith "'" s then
          let q = quoted i s; in
          if endsLine q.after then q.v else err i "invalid: unexpected text after quoted scalar"
        else plain i false (plainText s);

      # An inline value that ends line i, evaluated now so that its errors come before later lines'.
      inlineNode = i: s: let v = inlineValue i s; in b.seq v { inherit v; next = i + 1; };

      # --- block scalars -------------------------------------------------------------------

      # A `|` or `>` scalar whose header ends line i; p = indentation of the node holding it.
      blockScalar = i: p: header:
        let
          h = b.match "([|>])(-?)([ \t]+#.*|[ \t]*)" header;
          folded = b.head h == ">";
          strip = b.elemAt h 1 == "-";
          firstText = let go = k: if k < n && spaceOnly (line k) then go (k + 1) else k; in go (i + 1);
          nInd = if firstText < n then indentOf (line firstText) else 0;
          empty = firstText >= n || nInd <= p;
          endAt = let go = k: if k < n && (spaceOnly (line k) || indentOf (line k) >= nInd) then go (k + 1) else k; in go firstText;
          entries = b.genList
            (k: let l = line (i + 1 + k); in if spaceOnly l && b.stringLength l <= nInd then null else rest nInd l)
            (endAt - i - 1);
          leads = t: b.match "[ \t].*" t == null;
          step = st: e:
            if e == null then st // { pending = st.pending + 1; }
            else
              let
                lead = leads e;
                sep =
                  if !st.seen then newlines st.pending
                  else if folded && st.lead && lead then (if st.pending == 0 then " " else newlines st.pending)
                  else "\n" + newlines st.pending;
              in
              { out = st.out + sep + e; pending = 0; seen = true; inherit lead; };
          done = b.foldl' step { out = ""; pending = 0; seen = false; lead = false; } entries;
        in
        if h == null then err i "unsupported: block scalar header '${trimRight header}' (use |, |-, > or >-)"
        else if empty then { v = ""; next = firstText; }
        else { v = if !done.seen then "" else done.out + (if strip then "" else "\n"); next = endAt; };

      # --- block nodes ---------------------------------------------------------------------

      # Split a mapping entry "key: rest" at column c of line i, or null if the text is not one.
      entryOf = i: s:
        if startsWith "\"" s || startsWith "'" s then
          let q = quoted i s; m = b.match "[ \t]*:([ \t](.*))?" q.after; in
          if m == null then null
          else { k = q.v; after = if b.elemAt m 1 == null then "" else b.elemAt m 1; }
        else if startsWith "[" s || startsWith "{" s || isDash s then null
        else
          let parts = b.split ":([ \t]|$)" s; key = trimRight (b.head parts); in
          if b.length parts == 1 || b.match ".*[ \t]#.*" (b.head parts) != null then null
          else {
            k = let kv = plain i false key; in
              if b.isString kv then kv else err i "mapping keys must be strings, got '${key}'; quote it";
            after = b.substring (b.stringLength (b.head parts) + 2) (b.stringLength s) s;
          };

      # The value of a mapping entry at column c whose text after the colon is `after`.
      entryValue = i: c: after:
        let a = trimLeft after; in
        if isComment a then
          let j = skip (i + 1); in
          if j < n && indentOf (line j) > c then node j (indentOf (line j))
          else if j < n && indentOf (line j) == c && isDash (rest c (line j)) then seqAt j c
          else { v = null; next = i + 1; }
        else if startsWith "|" a || startsWith ">" a then blockScalar i c a
        else inlineNode i a;

      # Line j is indented deeper than the collection it follows. After a one-line plain value that is
      # a multi-line plain scalar (refused where it starts); otherwise a misplaced line.
      overIndented = i: val: j: what:
        if val.next == i + 1 && b.match ".*:([ \t].*)?" (line j) == null && b.match " *[-\"'\\[].*" (line j) == null
        then err i "unsupported: scalars spanning several lines (use | or >)"
        else err j "invalid: bad indentation (deeper than the ${what} above)";

      mapAt = i: c:
        let
          go = i: acc:
            let
              e = entryOf i (rest c (line i));
              val = entryValue i c e.after;
              acc' = acc // { ${e.k} = val.v; };
              j = skip val.next;
              ij = indentOf (line j);
            in
            if e == null then err i "invalid: expected a mapping entry `key: value`"
            else if acc ? ${e.k} then err i "duplicate key '${e.k}'"
            else if j >= n || ij < c then { v = acc'; next = j; }
            else if ij > c then overIndented i val j "mapping"
            else go j acc';
        in
        go i { };

      # One "- item" of a sequence whose dashes are at column c of line i.
      seqItem = i: c:
        let
          s = rest (c + 1) (line i);
          a = trimLeft s;
          c2 = c + 1 + b.stringLength s - b.stringLength a;
        in
        if isComment a then
          let j = skip (i + 1); in
          if j < n && indentOf (line j) > c then node j (indentOf (line j)) else { v = null; next = i + 1; }
        else if startsWith "|" a || startsWith ">" a then blockScalar i c a
        else node i c2;

      seqAt = i: c:
        let
          go = i: acc:
            let
              it = seqItem i c;
              acc' = acc ++ [ it.v ];
              j = skip it.next;
              ij = indentOf (line j);
            in
            if j >= n || ij < c then { v = acc'; next = j; }
            else if ij > c then overIndented i it j "sequence"
            else if isDash (rest c (line j)) then go j acc'
            else { v = acc'; next = j; };
        in
        go i [ ];

      # The node whose text starts at column c of line i: { v; next = first line after it; }.
      node = i: c:
        let s = rest c (line i); in
        if isDash s then seqAt i c
        else if entryOf i s != null then mapAt i c
        else inlineNode i s;

      document =
        let
          j = skip 0;
          r = node j (indentOf (line j));
          after = skip r.next;
        in
        if j >= n then err 0 "empty file: expected a mapping of engine fields"
        else if !(b.isAttrs r.v) then err j "the document must be a mapping of engine fields"
        else if after < n then err after "invalid: bad indentation or text after the document"
        else r.v;
    in
    b.seq precheck document;
in
{
  inherit parse;
  fromFile = path: parse (toString path) (b.readFile path);
}
