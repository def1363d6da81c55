"The headless-Chromium docs check fails on an error output, a missing plot and an undecodable image, and passes a good page."
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
    proc, docs = tmp_path/'_proc', tmp_path/'_docs'
    proc.mkdir(); docs.mkdir()
    for name, nb in pages.items(): (proc/f'{name}.ipynb').write_text(json.dumps(nb))
    subprocess.run([sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'html', '--output-dir', str(docs), *map(str, sorted(proc.glob('*.ipynb')))],
                   check=True, capture_output=True)
    return docs, proc


def test_docs_check_catches_bad_pages(tmp_path, capsys):
    img = {'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': _png(), 'text/plain': '<Figure>'}}
    err = {'output_type': 'error', 'ename': 'ValueError', 'evalue': 'boom',
           'traceback': ['---------------------------------------------------------------------------',
                         'ValueError                                Traceback (most recent call last)', 'ValueError: boom']}
    broken = {'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': 'bm90IGEgcG5n', 'text/plain': '<Figure>'}}
    docs, proc = _site(tmp_path, {
        'good': _nb([('interp.plot_roc_pr();', [img]), ('x = 1', [])]),
        'error': _nb([('raise ValueError("boom")', [err])]),
        'unplotted': _nb([('interp.plot_confusion_matrix()', [])]),
        'broken': _nb([('plot_class_counts(c)', [broken])]),
    })
    with pytest.raises(SystemExit) as e: check_docs.main(docs, proc, shots=['good'])
    out = capsys.readouterr().out
    lines = {l.split()[0]: l for l in out.splitlines() if l.endswith(('OK',)) or 'FAIL' in l}
    assert lines['good.html'].endswith('OK')
    assert 'error output(s)' in lines['error.html'] and 'Traceback (most recent call last)' in lines['error.html']
    assert "plotting cell(s) without a plot: ['interp.plot_confusion_matrix()']" in lines['unplotted.html']
    assert '1 image(s) that did not decode' in lines['broken.html']
    assert sorted(e.value.code.split('[')[1].strip(']').replace("'", '').split(', ')) == ['broken.html', 'error.html', 'unplotted.html']
    assert (docs/'screenshots'/'good.png').stat().st_size > 1000
