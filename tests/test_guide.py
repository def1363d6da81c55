"The guide page (nbs/09_guide.ipynb): its numbers are the saved runs', and its recipes name only what exists"
import ast, json, re
from pathlib import Path
import pytest

root = Path(__file__).resolve().parent.parent
nb = json.loads((root/'nbs'/'09_guide.ipynb').read_text())
prose = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')


def test_guide_numbers_are_the_saved_results():
    "Every three-decimal figure the prose quotes appears in a saved run's summary (a re-run that moves it fails here)"
    from fastai_imbalance.bench import load_results, summarize
    tables = ' '.join(summarize(load_results(root/'bench'/'results'/t)).to_string() for t in ('single', 'many', 'rare', 'multilabel'))
    tab = json.loads((root/'nbs'/'14_tutorial_tabular.ipynb').read_text())  # the table's figures: the tabular tutorial's saved outputs (its paired seeds)
    tables += ' '.join(''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', '')) for c in tab['cells'] for o in c.get('outputs', []))
    quoted = set(re.findall(r'(?<![\d.])[-−+]?\d\.\d{3}(?!\d)', prose))
    assert len(quoted) >= 10
    missing = sorted(q for q in quoted if q.replace('−', '-').lstrip('+') not in tables)
    assert not missing, f'figures in the guide that no saved run shows: {missing}'


def test_guide_recipes_name_what_exists():
    "Each python recipe parses, and every function or class it calls is in fastai's vision, tabular or text API, or in fastai_imbalance.all"
    ns = {}
    exec('from fastai.vision.all import *\nfrom fastai.tabular.all import *\nfrom fastai.text.all import *\nfrom fastai_imbalance.all import *', ns)
    blocks = re.findall(r'```python\n(.*?)```', prose, re.S)
    assert len(blocks) >= 4
    for b in blocks:
        tree = ast.parse(b)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id in ns, f'{node.func.id} in {b!r}'
                import inspect
                try: sig = inspect.signature(ns[node.func.id])
                except (TypeError, ValueError): continue
                sig.bind_partial(*[None] * len(node.args), **{k.arg: None for k in node.keywords if k.arg})  # a misspelt argument raises TypeError
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) and node.func.value.id == 'learn':
                from fastai.learner import Learner
                assert hasattr(Learner, node.func.attr), f'learn.{node.func.attr}'
