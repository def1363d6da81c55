"""Write README.md from nbs/index.ipynb (what `nbdev_readme` does, which needs Quarto), as clean Markdown.

Markdown cells as they are, code cells fenced, `#| hide` cells left out, `#| echo: false` cells as their output only.
Outputs become Markdown a code host shows as it is: Markdown outputs as they are, HTML tables (pandas', fastprogress'
fit table) as Markdown tables read by pandas, `<style>` blocks and other markup dropped, text outputs fenced. Links to
the docs pages (`NAME.html`) point at the notebooks (`nbs/NAME.ipynb`), which a code host renders.
`tests/test_readme.py` fails when README.md and the notebook drift apart, or when raw HTML markup is left.
"""
import io, json, re
from pathlib import Path
import pandas as pd

root = Path(__file__).resolve().parent.parent

def hidden(src): return any(l.strip().replace(' ', '') in ('#|hide', '#|include:false') for l in src.splitlines())
def echo_off(src): return any(l.strip().replace(' ', '') == '#|echo:false' for l in src.splitlines())  # output only (the bench tables)

def md_table(df:pd.DataFrame, keep:bool=False)->str:
    "A Markdown table of `df`, with its index as the first column when `keep`"
    if isinstance(df.columns, pd.MultiIndex): df.columns = [' '.join(str(x) for x in c if not str(x).startswith('Unnamed')).strip() for c in df.columns]
    cells = [([str(df.index.name or '')] if keep else []) + [str(c) for c in df.columns]]
    cells += [([str(i)] if keep else []) + ['' if pd.isna(v) else str(v) for v in r] for i, r in zip(df.index, df.astype(object).values)]  # object: an int column stays int
    esc = lambda s: s.replace('|', '\\|').replace('\n', ' ')
    return '\n'.join(['| ' + ' | '.join(map(esc, cells[0])) + ' |', '|' + '---|' * len(cells[0])] + ['| ' + ' | '.join(map(esc, r)) + ' |' for r in cells[1:]])

def html_md(html:str)->str:
    "Tables of an HTML output as Markdown tables; everything else (style blocks, wrappers) dropped"
    html = re.sub(r'<style.*?</style>', '', html, flags=re.S)
    if '<table' not in html: return ''
    tables = pd.read_html(io.StringIO(html), flavor='bs4', index_col=None)
    out = []
    for t in tables:
        first = t.columns[0]
        keep = str(first).startswith('Unnamed') or (isinstance(first, tuple) and all(str(x).startswith('Unnamed') or x == '' for x in first))
        if keep: t = t.set_index(first); t.index.name = None  # pandas' index column: a header cell left empty
        out.append(md_table(t, keep))
    return '\n\n'.join(out)

def out_md(o):
    d = o.get('data', {})
    if o.get('output_type') == 'stream':
        if o.get('name') == 'stderr': return ''  # warnings of the executing machine, not the README's
        return '```\n' + ''.join(o['text']).rstrip() + '\n```'
    if 'text/markdown' in d:
        t = ''.join(d['text/markdown']).strip()
        if re.match(r'```html\s*\n', t) or t.startswith('<'): return html_md(re.sub(r'^```html\s*\n|\n```$', '', t))  # fastprogress' fit table
        return t
    if 'text/html' in d:
        t = html_md(''.join(d['text/html']))
        if t: return t
    if 'text/plain' in d and 'text/html' not in d: return '```\n' + ''.join(d['text/plain']).rstrip() + '\n```'
    return ''

def links(md:str)->str:
    "Docs-page links (`NAME.html`, `NAME.html#x`) as links to the notebooks a code host renders"
    return re.sub(r'\]\(((?:\d\w*|index))\.html(#[^)]*)?\)', lambda m: f'](nbs/{m.group(1)}.ipynb{m.group(2) or ""})', md)

def readme(nb_path=root/'nbs'/'index.ipynb'):
    nb, parts = json.loads(Path(nb_path).read_text()), []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown': parts.append(links(src))
        elif not hidden(src):
            if not echo_off(src): parts.append('```python\n' + src + '\n```')
            parts += [m for m in map(out_md, c.get('outputs', [])) if m]
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    (root/'README.md').write_text(readme())
    print('README.md written from nbs/index.ipynb')
