"README.md is written from nbs/index.ipynb (`make readme`); this fails when they drift apart."
import importlib.util
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def test_readme_in_step_with_index():
    spec = importlib.util.spec_from_file_location('build_readme', root/'.ci'/'build_readme.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    assert (root/'README.md').read_text() == m.readme(), 'README.md is stale: run `make readme` and commit it'

def test_readme_states_the_commands():
    text = (root/'README.md').read_text()
    assert '```sh\nmake test\n```' in text and 'make demo' in text


def test_readme_bench_tables_are_the_saved_results():
    "Every saved bench run under bench/results/ appears in the README exactly as `bench_report` renders it now: text and numbers cannot drift"
    from fastai_imbalance.bench import bench_report
    text = (root/'README.md').read_text()
    folders = sorted(p.parent for p in (root/'bench'/'results').glob('*/results.json'))
    assert folders, 'no saved bench results under bench/results/'
    for f in folders:
        md = bench_report(f, link=f.relative_to(root).as_posix())
        assert md.strip() in text, f'README.md does not show the current report of {f.name}: run `make bench-tables`'
        assert (f/'balanced_accuracy.png').exists() or any(f.glob('*.png'))
