#!/usr/bin/env bash
# The release check (`make package-check`): build the sdist and the wheel, check their metadata and README with twine,
# install the wheel into an empty virtual environment (only the runtime requirements, torch pinned to the local wheel),
# and from there import fastai_imbalance.all and run `fastai-imbalance-bench --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BIN=.venv/bin
rm -rf dist  # this script's output: the release files it checks
$BIN/python -m build --outdir dist . > /tmp/fastai_imbalance_build.log 2>&1 || { tail -30 /tmp/fastai_imbalance_build.log; exit 1; }
ls dist
$BIN/python -m twine check --strict dist/*
# the sdist carries what the wheel is built from (settings.ini, README.md for the long description)
$BIN/python - <<'PY'
import tarfile, glob
names = tarfile.open(glob.glob('dist/*.tar.gz')[0]).getnames()
need = ['README.md', 'settings.ini', 'setup.py', 'fastai_imbalance/all.py', 'fastai_imbalance/bench.py']
missing = [n for n in need if not any(x.endswith('/' + n) for x in names)]
assert not missing, f'the sdist lacks {missing}'
print(f'sdist: {len(names)} entries, holds {", ".join(need)}')
PY
env_dir=$(mktemp -d)/venv
$PY -m venv "$env_dir"
"$env_dir/bin/pip" install -q -c .ci/constraints.txt dist/*.whl 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
repo=$PWD
cd "$(dirname "$env_dir")"   # away from the checkout: the import must come from the installed wheel
"$env_dir/bin/python" -W ignore -c "import fastai_imbalance, fastai_imbalance.all as a; assert fastai_imbalance.__file__.startswith('$env_dir'), fastai_imbalance.__file__; print('imported fastai_imbalance', fastai_imbalance.__version__, 'from the wheel:', len(a.__dict__), 'names in fastai_imbalance.all')"
# outputs captured whole, then shortened: piping into head closes the pipe early (pipefail would report the writer's BrokenPipeError)
out=$(PYTHONWARNINGS=ignore "$env_dir/bin/fastai-imbalance-bench" --help); head -3 <<<"$out"
# a command that imports the whole training stack (fastai.vision, timm, scikit-learn) and reads saved results: the report of a saved run
out=$(PYTHONWARNINGS=ignore "$env_dir/bin/fastai-imbalance-bench" --report "$repo/bench/results/single"); head -3 <<<"$out"
grep -q '| method |' <<<"$out" || { echo "the saved run's report has no table"; exit 1; }
extra=$("$env_dir/bin/pip" list --format=freeze | grep -iE '^(nbdev|pytest|playwright|mkdocs|jupyter)==' || true)
[[ -z "$extra" ]] || { echo "dev packages in the runtime environment: $extra"; exit 1; }
rm -rf "$(dirname "$env_dir")"
echo "package-check: sdist and wheel built, twine check passed, the wheel installs and runs in an empty environment"
