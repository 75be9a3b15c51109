#!/usr/bin/env bash
# Installs WordNet 3.0 for nltk's METEOR from Debian's packages (nltk.download cannot reach its host here).
#
#   bash .ci/install-wordnet.sh [NLTK_DATA_DIR]
#
# Target (first that is set): the argument, the first entry of $NLTK_DATA, $MEMLORA_CACHE/nltk_data,
# ${XDG_CACHE_HOME:-~/.cache}/memlora/nltk_data (memlora's default cache; `memlora.bench.metrics` looks there).
# Route: `apt-get download wordnet-base wordnet-sense-index` (no root needed, no install), `dpkg-deb -x`, copy the database
# files into <dir>/corpora/wordnet/ and write the `lexnames` file nltk's reader needs, generated from the lexnames(5WN)
# man page shipped in wordnet-base (45 lines: "NN<TAB>name<TAB>syntactic-category"). Idempotent: does nothing when present.
set -euo pipefail

if [ $# -ge 1 ] && [ -n "$1" ]; then
  target="$1"
elif [ -n "${NLTK_DATA:-}" ]; then
  target="${NLTK_DATA%%:*}"
elif [ -n "${MEMLORA_CACHE:-}" ]; then
  target="$MEMLORA_CACHE/nltk_data"
else
  target="${XDG_CACHE_HOME:-$HOME/.cache}/memlora/nltk_data"
fi
mkdir -p "$target"
target="$(cd "$target" && pwd)"
wn="$target/corpora/wordnet"

if [ -s "$wn/lexnames" ] && [ -s "$wn/data.noun" ] && [ -s "$wn/index.sense" ]; then
  echo "wordnet: already installed in $wn"
  exit 0
fi

for tool in apt-get dpkg-deb; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "wordnet: $tool not found (not a Debian system); METEOR will be reported unavailable" >&2
    exit 1
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 777 "$work"   # apt-get download as root drops to the _apt user when it can write there
cd "$work"
if ! apt-get download -q wordnet-base wordnet-sense-index >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  apt-get download -q wordnet-base wordnet-sense-index >/dev/null
fi
for deb in ./*.deb; do dpkg-deb -x "$deb" root; done

src="root/usr/share/wordnet"
for f in data.noun data.verb data.adj data.adv index.noun index.verb index.adj index.adv index.sense \
         noun.exc verb.exc adj.exc adv.exc cntlist.rev; do
  if [ ! -s "$src/$f" ]; then
    echo "wordnet: $f missing from the Debian packages" >&2
    exit 1
  fi
done

rm -rf "$wn.partial"
mkdir -p "$wn.partial"
cp "$src"/* "$wn.partial"/
# lexnames: the table rows of lexnames(5WN), category from the file name's prefix (noun 1, verb 2, adj 3, adv 4).
zcat root/usr/share/man/man5/lexnames.5WN.gz \
  | awk -F'\t' '/^[0-9][0-9]\t/ {
      name = $2; gsub(/[ \t]+$/, "", name); split(name, p, ".");
      cat = (p[1] == "noun") ? 1 : (p[1] == "verb") ? 2 : (p[1] == "adj") ? 3 : (p[1] == "adv") ? 4 : 0;
      if (cat == 0) { exit 2 }
      printf "%s\t%s\t%d\n", $1, name, cat }' > "$wn.partial/lexnames"
lines="$(wc -l < "$wn.partial/lexnames")"
if [ "$lines" != "45" ]; then
  echo "wordnet: expected 45 lexnames, got $lines" >&2
  exit 1
fi
cp root/usr/share/doc/wordnet-base/copyright "$wn.partial/LICENSE" 2>/dev/null || true
rm -rf "$wn"
mv "$wn.partial" "$wn"
echo "wordnet: installed WordNet 3.0 into $wn"
