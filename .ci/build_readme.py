"""Write README.md from nbs/index.ipynb (what `nbdev_readme` does, which needs Quarto).

Markdown cells as they are, code cells fenced, `#| hide` cells left out, `#| echo: false` cells as their output only, outputs as markdown, HTML or text.
`tests/test_readme.py` fails when README.md and the notebook drift apart.
"""
import json
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def hidden(src): return any(l.strip().replace(' ', '') in ('#|hide', '#|include:false') for l in src.splitlines())
def echo_off(src): return any(l.strip().replace(' ', '') == '#|echo:false' for l in src.splitlines())  # output only (the bench tables)

def out_md(o):
    d = o.get('data', {})
    if o.get('output_type') == 'stream': return '```\n' + ''.join(o['text']).rstrip() + '\n```'
    for mime in ('text/markdown', 'text/html'):
        if mime in d: return ''.join(d[mime]).strip()
    if 'text/plain' in d: return '```\n' + ''.join(d['text/plain']).rstrip() + '\n```'
    return ''

def readme(nb_path=root/'nbs'/'index.ipynb'):
    nb, parts = json.loads(Path(nb_path).read_text()), []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown': parts.append(src)
        elif not hidden(src):
            if not echo_off(src): parts.append('```python\n' + src + '\n```')
            parts += [m for m in map(out_md, c.get('outputs', [])) if m]
    return '\n\n'.join(parts).replace('\n> ', '\n> ', 1) + '\n'

if __name__ == '__main__':
    (root/'README.md').write_text(readme())
    print('README.md written from nbs/index.ipynb')
