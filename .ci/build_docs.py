"""Build the documentation site without Quarto (not installable here): `make docs`.

1. nbdev's own `nbdev_proc_nbs` processes the notebooks into `_proc/` (show_doc tables, hidden cells removed,
   directives applied). It insists on installing Quarto first, which only renders, so that one check is skipped.
2. The processed notebooks' outputs are cleaned (`clean_outputs`):
   - three warnings that are not this library's are dropped: torch's "`torch.jit.script` is deprecated" FutureWarning,
     raised by importing fastai (its layers use `torch.jit.script`), and fastai's `load_learner` warning that pickle
     can run code (the tutorial that calls `load_learner` says so in its prose); and torch's "NumPy array is not writable"
     UserWarning, raised inside fastai's tabular loader on pandas 3's read-only column arrays;
   - any other warning on stderr (this library's own, shown on purpose) becomes plain text, `UserWarning: message`,
     without the file and line it was raised from;
   - a cell marked `#| echo: false` shows its output only (tagged `hide_code`, which mkdocs-jupyter drops), and no
     cell shows its `#|` directive lines;
   - show_doc's `{target="_blank" ...}` (Quarto's link attributes) is dropped;
   - absolute paths of the machine that executed the notebook are cut to what follows them (`site-packages/`,
     a temporary folder).
   `check_docs.py` fails on any stderr box or absolute path that is left.
   nbdev's links to the documented names point into the published site by module (`.../core.html#class_counts`):
   they become links between these pages (`00_core.html#class_counts`), so they work offline and from a file.
3. mkdocs-material renders them with mkdocs-jupyter into `_docs/` (`mkdocs.yml`: the sidebar, offline search).
"""
import json, os, re, shutil, subprocess, sys
import yaml
from pathlib import Path
import nbdev.quarto
from nbdev.config import get_config

DROPPED = (re.compile(r'FutureWarning: `torch\.jit\.script` is deprecated'), re.compile(r"UserWarning: load_learner` uses Python's insecure pickle"),
           re.compile(r'UserWarning: The given NumPy array is not writable'))
WARNING = re.compile(r'^\S*:\d+: (\w*(?:Warning|Error)): (.*?)\n(?:  .*\n?)*', re.M)  # path:line: Category: message, then the indented source line(s)
DIRECTIVE = re.compile(r'^#\|.*\n?', re.M)
ABS_PATH = (re.compile(r'(?:/[\w.\-]+)+/site-packages/'), re.compile(r'/tmp/(?:tmp|ipykernel_)[\w\-]+/'))

PANDOC_ATTRS = re.compile(r'\{target="_blank"[^}]*\}')  # show_doc's source link carries Quarto's attributes, which Markdown prints as text

def clean_text(t:str)->str:
    for r in ABS_PATH: t = r.sub('', t)
    return PANDOC_ATTRS.sub('', t)

def clean_outputs(nb:dict)->int:
    "Drop the known third-party warnings, turn other stderr warnings into plain text, cut absolute paths; returns how many outputs were dropped"
    dropped = 0
    for c in nb['cells']:
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        if DIRECTIVE.search(src) and re.search(r'^#\|\s*echo:\s*false', src, re.M): c.setdefault('metadata', {}).setdefault('tags', []).append('hide_code')
        c['source'] = DIRECTIVE.sub('', src)  # Quarto reads the `#|` directives and shows none of them
        outs = []
        for o in c.get('outputs', []):
            if o.get('output_type') == 'stream' and o.get('name') == 'stderr':
                t = ''.join(o['text'])
                for r in DROPPED:
                    if r.search(t): t = WARNING.sub(lambda m: '' if r.search(m.group(0)) else m.group(0), t)
                t = WARNING.sub(lambda m: f'{m.group(1)}: {m.group(2)}\n', t)
                if not t.strip(): dropped += 1; continue
                o = {'output_type': 'stream', 'name': 'stdout', 'text': clean_text(t)}
            elif o.get('output_type') == 'stream': o['text'] = clean_text(''.join(o['text']))
            elif 'data' in o:
                for k in ('text/plain', 'text/markdown', 'text/html'):
                    if k in o['data']: o['data'][k] = clean_text(''.join(o['data'][k]))
            elif o.get('output_type') == 'error': o['traceback'] = [clean_text(l) for l in o['traceback']]
            outs.append(o)
        c['outputs'] = outs
    return dropped

def page_links(root:Path)->dict:
    "nbdev's doc links name a module's page (`{doc_host}{baseurl}/core.html#x`): the page of that module here is its notebook's (`00_core.html`)"
    names = {}
    for nb in (root/'nbs').glob('*.ipynb'):
        names[nb.stem] = nb.stem
        m = re.search(r'#\|\s*default_exp\s+([\w.]+)', nb.read_text())
        if m: names[m.group(1)] = nb.stem
    return names

def local_links(text:str, base:str, names:dict)->str:
    "Links into the published site (`base`NAME.html#anchor) as links between these pages"
    slug = lambda a: re.sub(r'[^\w\- ]', '', a).strip().lower().replace(' ', '-')  # the heading ids of mkdocs' toc: `Learner.fit` is `learnerfit`
    return re.sub(re.escape(base) + r'([\w.]+)\.html(?:#([^"\'\s)\\]+))?',
                  lambda m: f'{names.get(m.group(1), m.group(1))}.html' + (f'#{slug(m.group(2))}' if m.group(2) else ''), text)

def front_matter_as_heading(nb:dict, stem:str):
    "nbdev turns a notebook's title cell into Quarto front matter (a raw cell): make it a heading again, with the description as its lead"
    c = nb['cells'][0] if nb['cells'] else None
    if c is None or c['cell_type'] != 'raw' or not ''.join(c['source']).startswith('---'): return
    meta = yaml.safe_load(''.join(c['source']).strip().strip('-')) or {}
    md = f"# {meta.get('title', stem)}" + (f"\n\n> {meta['description']}" if meta.get('description') else '')
    nb['cells'][0] = {'cell_type': 'markdown', 'id': c.get('id', 'frontmatter'), 'metadata': {}, 'source': md}

def main():
    cfg = get_config()
    root = cfg.config_path
    proc = root/'_proc'
    shutil.rmtree(proc, ignore_errors=True)  # nbdev skips notebooks it processed before: these steps must see each one fresh
    nbdev.quarto._ensure_quarto = lambda: None  # Quarto renders; processing does not need it
    nbdev.quarto.nbdev_proc_nbs.__wrapped__(n_workers=0)
    nbs = sorted(proc.glob('*.ipynb'))
    if not nbs: sys.exit(f'no processed notebooks in {proc}')
    dropped,names = 0,page_links(root)
    base = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/'
    for p in nbs:
        nb = json.loads(p.read_text())
        front_matter_as_heading(nb, p.stem); dropped += clean_outputs(nb)
        p.write_text(local_links(json.dumps(nb, indent=1), base, names))
    shutil.copy(root/'.ci'/'docs.css', proc/'docs.css')
    for png in (root/'bench'/'results').glob('*/*.png'):  # the bench charts the home page shows
        (proc/png.relative_to(root).parent).mkdir(parents=True, exist_ok=True); shutil.copy(png, proc/png.relative_to(root))
    print(f'{len(nbs)} notebooks processed; {dropped} third-party warning output(s) dropped')
    out = root/'_docs'
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, 'NO_MKDOCS_2_WARNING': '1'}  # mkdocs-material's banner about its successor, printed on every build
    subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '-f', str(root/'mkdocs.yml')], check=True, env=env)
    print(f"{len(list(out.glob('*.html')))} pages in {out}")

if __name__ == '__main__': main()
