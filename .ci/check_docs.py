"""Open every rendered docs page in headless Chromium and fail on an error output or a missing plot.

For each `_docs/*.html` page (from `make docs`), Chromium (Debian's package, `/usr/bin/chromium`, driven by Playwright
without a browser download) loads the page offline and reports:
- error outputs: a Python traceback in an output area, or an error output in the processed notebook;
- missing plots: an image output of the processed notebook that is not in the page, an image that did not decode
  (zero width), or a cell that calls a plotting function but has no image output (a notebook saved unexecuted).
It writes screenshots of the home page and the tutorials to `_docs/screenshots/` and exits 1 on any failure.
"""
import json, re, sys
from pathlib import Path
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
DOCS, PROC = ROOT/'_docs', ROOT/'_proc'
CHROMIUM = '/usr/bin/chromium'
SHOTS = ['index', '10_tutorial_many_classes', '11_tutorial_rare_positive', '12_tutorial_multilabel']
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run', '--disable-quic']
PLOT_CALL = re.compile(r'^(?!\s*(def |#|@)).*(\bplot_\w+\(|\.plot\w*\(|show_images\(|show_batch\(|plt\.(subplots|figure)\()', re.M)
PAGE_JS = """() => {
  const outs = [...document.querySelectorAll('.jp-OutputArea-output, .output_area, .output')];
  const imgs = [...document.querySelectorAll('img')].filter(i => (i.getAttribute('src') || '').startsWith('data:image'));
  return {tracebacks: outs.map(o => o.innerText).filter(t => /Traceback \\(most recent call last\\)/.test(t)).map(t => t.slice(0, 300)),
          images: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
          title: document.title, text: document.body.innerText.length};
}"""

def notebook_facts(nb_path):
    "(image outputs, error outputs, plotting cells without an image) of a processed notebook"
    nb = json.loads(nb_path.read_text())
    imgs = errs = 0; unplotted = []
    for c in nb['cells']:
        if c['cell_type'] != 'code': continue
        outs = c.get('outputs', [])
        n = sum('image/png' in o.get('data', {}) or 'image/svg+xml' in o.get('data', {}) for o in outs)
        imgs += n; errs += sum(o.get('output_type') == 'error' for o in outs)
        src = ''.join(c['source'])
        if n == 0 and PLOT_CALL.search(src) and not src.lstrip().startswith('#| export'): unplotted.append(src.strip().splitlines()[0][:80])
    return imgs, errs, unplotted

def main(docs=DOCS, proc=PROC, shots=SHOTS):
    pages = sorted(docs.glob('*.html'))
    if not pages: sys.exit(f'no pages in {docs}: run `make docs` first')
    if not Path(CHROMIUM).exists(): sys.exit(f'{CHROMIUM} not found: install Debian\'s chromium package (`make chromium`)')
    (docs/'screenshots').mkdir(exist_ok=True)
    failures = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        errors = []
        page.on('pageerror', lambda e: errors.append(str(e)))
        for html in pages:
            errors.clear()
            page.goto(html.as_uri(), wait_until='load')
            r = page.evaluate(PAGE_JS)
            want, nb_errs, unplotted = notebook_facts(proc/f'{html.stem}.ipynb') if (proc/f'{html.stem}.ipynb').exists() else (0, 0, [])
            bad = []
            if r['text'] < 200: bad.append(f"almost empty page ({r['text']} characters)")
            if r['tracebacks'] or nb_errs: bad.append(f"{max(len(r['tracebacks']), nb_errs)} error output(s): {r['tracebacks'][:1]}")
            if r['broken']: bad.append(f"{r['broken']} image(s) that did not decode")
            if r['images'] < want: bad.append(f"{want} image outputs in the notebook, {r['images']} in the page")
            if unplotted: bad.append(f"plotting cell(s) without a plot: {unplotted}")
            if errors: bad.append(f"script errors: {errors[:2]}")
            print(f"{html.name:42s} {r['images']:2d} plots  {'OK' if not bad else 'FAIL: ' + '; '.join(bad)}")
            if bad: failures.append(html.name)
            if html.stem in shots:
                shot = docs/'screenshots'/f'{html.stem}.png'
                page.screenshot(path=str(shot), full_page=True)
        browser.close()
    missing = [s for s in shots if not (docs/'screenshots'/f'{s}.png').exists()]
    if missing: failures.append(f'no page for screenshot(s) {missing}')
    print(f"{len(pages)} pages checked in headless Chromium; screenshots of {', '.join(shots)} in {docs/'screenshots'}")
    if failures: sys.exit(f'docs check failed: {failures}')

if __name__ == '__main__': main()
