"The headless-Chromium docs check, on a small mkdocs-material site built like the real one: it passes a good page and fails each kind of bad one."
import base64, io, json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'.ci'))
check_docs = pytest.importorskip('check_docs')
pytest.importorskip('playwright')
if not Path(check_docs.CHROMIUM).exists(): pytest.skip(f'{check_docs.CHROMIUM} not installed (`make chromium`)', allow_module_level=True)


def _png():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, 1], [1, 0])
    buf = io.BytesIO(); fig.savefig(buf, format='png'); plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _nb(cells):
    nb = {'cells': [], 'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}}, 'nbformat': 4, 'nbformat_minor': 5}
    for i, (src, outs) in enumerate(cells):
        nb['cells'].append({'cell_type': 'code', 'id': f'c{i}', 'metadata': {}, 'execution_count': None, 'source': src, 'outputs': outs})
    nb['cells'].insert(0, {'cell_type': 'markdown', 'id': 'm', 'metadata': {}, 'source': '# A page\n\n' + 'Some prose about the page. ' * 20})
    return nb


def _site(tmp_path, pages):
    "A mkdocs-material + mkdocs-jupyter site of `pages` (name -> notebook), every page in the sidebar, built as `make docs` builds it"
    proc, docs = tmp_path/'_proc', tmp_path/'_docs'
    proc.mkdir()
    for name, nb in pages.items(): (proc/f'{name}.ipynb').write_text(json.dumps(nb))
    nav = '\n'.join(f'  - {n}: {n}.ipynb' for n in pages)
    (tmp_path/'mkdocs.yml').write_text(f"site_name: t\ndocs_dir: _proc\nsite_dir: _docs\nuse_directory_urls: false\ntheme: {{name: material, font: false}}\n"
                                       f"plugins: [search, offline, {{mkdocs-jupyter: {{execute: false, include_requirejs: false}}}}]\nnav:\n{nav}\n")
    subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '-q', '-f', str(tmp_path/'mkdocs.yml')], check=True, capture_output=True)
    return docs, proc


def _md(text): return {'cell_type': 'markdown', 'id': 'x' + str(abs(hash(text)) % 10**8), 'metadata': {}, 'source': text}


def test_docs_check_catches_bad_pages(tmp_path, capsys):
    img = {'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': _png(), 'text/plain': '<Figure>'}}
    err = {'output_type': 'error', 'ename': 'ValueError', 'evalue': 'boom',
           'traceback': ['---------------------------------------------------------------------------',
                         'ValueError                                Traceback (most recent call last)', 'ValueError: boom']}
    broken = {'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': 'bm90IGEgcG5n', 'text/plain': '<Figure>'}}
    stderr = {'output_type': 'stream', 'name': 'stderr', 'text': '/root/x/.venv/lib/python3.11/site-packages/torch/jit/_script.py:1491: FutureWarning: deprecated\n'}
    table = {'output_type': 'display_data', 'metadata': {}, 'data': {'text/html': '<table style="display: table; overflow: visible"><tr>' + '<td>a_long_cell_value</td>' * 120 + '</tr></table>', 'text/plain': 't'}}
    good = _nb([('interp.plot_roc_pr();', [img]), ('x = 1', [])]); good['cells'].append(_md('## BalancedFinetune\n\nSee [the other page](error.html) and [a section](#balancedfinetune).'))
    badlink = _nb([('x = 1', [])]); badlink['cells'].append(_md('See [nowhere](missing.html), [no anchor](index.html#no-such) and [the published site](https://fastai-imbalance.github.io/fastai_imbalance/core.html).'))
    docs, proc = _site(tmp_path, {
        'index': good,
        'error': _nb([('raise ValueError("boom")', [err])]),
        'unplotted': _nb([('interp.plot_confusion_matrix()', [])]),
        'broken': _nb([('plot_class_counts(c)', [broken])]),
        'stderr': _nb([('import fastai', [stderr])]),
        'table': _nb([('df', [table])]),
        'badlink': badlink,
        'directive': _nb([('#| echo: false\nshow_doc(f)', [])]),
    })
    with pytest.raises(SystemExit) as e: check_docs.main(docs, proc, shots={'index': 'home'})
    out = capsys.readouterr().out
    lines = {l.split()[0]: l for l in out.splitlines() if l.endswith('OK') or 'FAIL' in l}
    assert lines['index.html'].endswith('OK'), lines['index.html']
    assert 'error output(s)' in lines['error.html'] and 'Traceback (most recent call last)' in lines['error.html']
    assert "plotting cell(s) without a plot: ['interp.plot_confusion_matrix()']" in lines['unplotted.html']
    assert 'image(s) that did not load' in lines['broken.html']
    assert 'stderr box' in lines['stderr.html'] and 'absolute path' in lines['stderr.html']
    assert 'wider than the page' in lines['table.html'] or 'scrolls sideways' in lines['table.html'], lines['table.html']
    bad = [l for l in out.splitlines() if l.startswith('badlink.html') and 'link(s)' in l][0]
    assert 'missing.html' in bad and 'index.html#no-such' in bad and 'fastai-imbalance.github.io' in bad
    assert "search for 'BalancedFinetune': 0" not in out
    assert 'directive(s) shown' in lines['directive.html']
    for name in ('error', 'unplotted', 'broken', 'stderr', 'table', 'directive'): assert f'{name}.html' in e.value.code
    assert (docs/'screenshots'/'home_index.png').stat().st_size > 1000
