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


def test_readme_is_clean_markdown():
    "No raw markup from notebook outputs (fastprogress' style block, pandas' scoped CSS and table HTML, html code fences): a code host shows them as text"
    import re
    text = (root/'README.md').read_text()
    bad = re.findall(r'<(?:style|div|table|thead|tbody|tr|td|th|span|script)\b[^>]*>|```html', text)
    assert not bad, f'raw HTML left in README.md: {sorted(set(bad))[:5]}'
    assert re.search(r'^\| epoch \| train_loss \| valid_loss ', text, re.M), 'the fit table is not a Markdown table'
    assert '](https://fastai-imbalance.github.io/fastai_imbalance/09_guide.html)' in text and not re.search(r'\]\(\w+\.html', text), 'docs links must point at the built site'
    assert not re.search(r'\]\(nbs/\w+\.ipynb', text), 'a link to a raw notebook: a code host shows its stderr and its .html links break'
    top = text[:text.index('## What is in it')]
    assert 'make demo' in top and 'make test' in top, 'the two commands come first'


def test_build_readme_converts_markup():
    "The converter on the outputs it meets: pandas' styled table keeps its index and ints, fastprogress' table in an html fence, a style block alone"
    import importlib.util, pandas as pd
    spec = importlib.util.spec_from_file_location('build_readme', root/'.ci'/'build_readme.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    df = pd.DataFrame({'train': [100, 1], 'recall': [.98, .5]}, index=['a', 'b'])
    got = m.out_md({'output_type': 'execute_result', 'data': {'text/html': '<div><style scoped>.x{}</style>' + df.to_html() + '</div>', 'text/plain': repr(df)}})
    assert got.splitlines() == ['|  | train | recall |', '|---|---|---|', '| a | 100 | 0.98 |', '| b | 1 | 0.50 |']  # as pandas shows them, got
    fp = {'output_type': 'display_data', 'data': {'text/markdown': '```html\n<div><table class="fastprogress"><thead><tr><th>epoch</th><th>train_loss</th></tr></thead>'
                                                                  '<tbody><tr><td>0</td><td>2.40</td></tr></tbody></table></div>\n```'}}
    assert m.out_md(fp).splitlines() == ['| epoch | train_loss |', '|---|---|', '| 0 | 2.40 |'], m.out_md(fp)  # the text as shown, not reparsed
    named = pd.DataFrame({'n': [1000, 2]}, index=pd.Index(['x|y', 'z'], name='class'))
    assert m.out_md({'output_type': 'execute_result', 'data': {'text/html': named.to_html(), 'text/plain': ''}}).splitlines() == ['| class | n |', '|---|---|', '| x\\|y | 1000 |', '| z | 2 |']
    assert m.out_md({'output_type': 'display_data', 'data': {'text/html': '<div><p>no table</p></div>', 'text/plain': 'the plain text'}}) == '```\nthe plain text\n```'  # no table: the text form
    assert m.out_md({'output_type': 'display_data', 'data': {'text/html': '<style>.a{}</style>', 'text/plain': '<IPython.core.display.HTML object>'}}) == ''  # fastprogress' style block
    assert m.out_md({'output_type': 'stream', 'name': 'stderr', 'text': '/root/x.py:1: UserWarning: w'}) == ''
    assert m.links('see [a](09_guide.html) and [b](08_bench.html#x) and [c](https://x.org/a.html)') == ('see [a](https://fastai-imbalance.github.io/fastai_imbalance/09_guide.html) and '
                                                                                    '[b](https://fastai-imbalance.github.io/fastai_imbalance/08_bench.html#x) and [c](https://x.org/a.html)')
