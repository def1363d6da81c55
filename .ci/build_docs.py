"""Build the documentation pages without Quarto (not installable here).

nbdev's own `nbdev_proc_nbs` processes the notebooks into `_proc/` (show_doc tables, hidden cells removed,
directives applied). It insists on installing Quarto first, which is only needed to render, so that one
check is skipped. Each processed notebook is then rendered to HTML in `_docs/` by `jupyter nbconvert`.
"""
import json, subprocess, sys, shutil
import yaml
from pathlib import Path
import nbdev.quarto
from nbdev.config import get_config

nbdev.quarto._ensure_quarto = lambda: None  # Quarto renders; processing does not need it
nbdev.quarto.nbdev_proc_nbs.__wrapped__(n_workers=0)
cfg = get_config()
proc, out = cfg.config_path/'_proc', cfg.config_path/cfg.doc_path.name
shutil.rmtree(out, ignore_errors=True)
nbs = sorted(proc.glob('*.ipynb'))
if not nbs: sys.exit(f'no processed notebooks in {proc}')

def front_matter_as_heading(path):
    "nbdev turns a notebook's title cell into Quarto front matter (a raw cell); nbconvert would print it as text: make it a heading again"
    nb = json.loads(path.read_text())
    c = nb['cells'][0] if nb['cells'] else None
    if c is None or c['cell_type'] != 'raw' or not ''.join(c['source']).startswith('---'): return
    meta = yaml.safe_load(''.join(c['source']).strip().strip('-')) or {}
    md = f"# {meta.get('title', path.stem)}" + (f"\n\n> {meta['description']}" if meta.get('description') else '')
    nb['cells'][0] = {'cell_type': 'markdown', 'id': c.get('id', 'frontmatter'), 'metadata': {}, 'source': md}
    path.write_text(json.dumps(nb, indent=1))

for nb_path in nbs: front_matter_as_heading(nb_path)
subprocess.run([sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'html', '--output-dir', str(out), *map(str, nbs)], check=True)
pages = sorted(out.glob('*.html'))
print(f'{len(pages)} pages in {out}: ' + ', '.join(p.name for p in pages))
