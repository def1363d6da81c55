"""Write README.md from nbs/index.ipynb (what `nbdev_readme` does, which needs Quarto), as clean Markdown.

Markdown cells as they are, code cells fenced, `#| hide` cells left out, `#| echo: false` cells as their output only.
Outputs become Markdown a code host shows as it is: Markdown outputs as they are, HTML tables (pandas', fastprogress'
fit table) as Markdown tables of each cell's text (Beautiful Soup; no number reparsed), `<style>` blocks and other markup dropped, text outputs fenced. Links to
the docs pages (`NAME.html`) point at the built site (settings.ini's doc_host and doc_baseurl), whose pages show the cleaned outputs.
`tests/test_readme.py` fails when README.md and the notebook drift apart, or when raw HTML markup is left.
"""
import json, re
from pathlib import Path
from bs4 import BeautifulSoup

root = Path(__file__).resolve().parent.parent

def hidden(src): return any(l.strip().replace(' ', '') in ('#|hide', '#|include:false') for l in src.splitlines())
def echo_off(src): return any(l.strip().replace(' ', '') == '#|echo:false' for l in src.splitlines())  # output only (the bench tables)

def md_table(rows:list)->str:
    "A Markdown table of `rows` (lists of cell texts, the first the header)"
    w = max(map(len, rows))
    rows = [r + [''] * (w - len(r)) for r in rows]
    esc = lambda s: s.replace('|', '\\|').replace('\n', ' ')
    return '\n'.join(['| ' + ' | '.join(map(esc, rows[0])) + ' |', '|' + '---|' * w] + ['| ' + ' | '.join(map(esc, r)) + ' |' for r in rows[1:]])

def html_md(html:str)->str:
    "The tables of an HTML output as Markdown tables, each cell's text exactly as shown (no number reparsed); '' when it holds no table"
    soup = BeautifulSoup(html, 'html5lib')
    out = []
    for t in soup.find_all('table'):
        head = [[c.get_text(' ', strip=True) for c in tr.find_all(['th', 'td'])] for tr in (t.thead.find_all('tr') if t.thead else [])]
        body = [[c.get_text(' ', strip=True) for c in tr.find_all(['th', 'td'])] for tr in (t.tbody or t).find_all('tr', recursive=False)]
        if not head and body: head, body = body[:1], body[1:]
        while len(head) > 1 and head[-1][0] and not any(head[-1][1:]): head[0][0] = head.pop()[0]  # pandas' index-name row
        while len(head) > 1: head = [[' '.join(x for x in col if x) for col in zip(*head)]]  # column levels, joined
        out.append(md_table(head + body))
    return '\n\n'.join(out)

DIRECTIVE = re.compile(r'^#\|.*\n?', re.M)

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
    if 'text/plain' in d and not ''.join(d['text/plain']).startswith('<IPython'): return '```\n' + ''.join(d['text/plain']).rstrip() + '\n```'
    return ''

def site_url()->str:
    "The docs site's address, from settings.ini (doc_host + doc_baseurl), ending in /"
    import configparser
    c = configparser.ConfigParser(); c.read(root/'settings.ini')
    return c['DEFAULT']['doc_host'].rstrip('/') + '/' + c['DEFAULT']['doc_baseurl'].strip('/') + '/'

def links(md:str)->str:
    "Docs-page links (`NAME.html`, `NAME.html#x`) as links to the built pages of the docs site (a code host would show the raw notebooks, stderr and all)"
    return re.sub(r'\]\(((?:\d\w*|index))\.html(#[^)]*)?\)', lambda m: f']({site_url()}{m.group(1)}.html{m.group(2) or ""})', md)

def readme(nb_path=root/'nbs'/'index.ipynb'):
    nb, parts = json.loads(Path(nb_path).read_text()), []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown': parts.append(links(src))
        elif not hidden(src):
            if not echo_off(src): parts.append('```python\n' + DIRECTIVE.sub('', src).strip('\n') + '\n```')
            parts += [m for m in map(out_md, c.get('outputs', [])) if m]
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    (root/'README.md').write_text(readme())
    print('README.md written from nbs/index.ipynb')
