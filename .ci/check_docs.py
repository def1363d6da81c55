"""Read the docs site as a reader would, in headless Chromium, and fail on what a reader would trip over: `make docs-check`.

`_docs/` (from `make docs`) is served on localhost and Chromium (Debian's package, `/usr/bin/chromium`, driven by
Playwright without a browser download) opens it with no network. It fails when:
- a sidebar link of the home page does not open a page, or a processed notebook has no page in the sidebar;
- a page has an error output (a traceback), a stderr box, a `#|` notebook directive shown as code, or an absolute path of a machine
  (`/home/...`, `/root/...`, `/tmp/...`, `/work/...`, `.../site-packages/...`);
- an image did not decode, the page shows fewer plots than its processed notebook holds, or a cell that plots has no
  image output (a notebook saved unexecuted);
- the page scrolls sideways, or a table is wider than its box without scrolling inside it;
- a link goes to a page or anchor of the site that does not exist, or into the published site instead of these pages;
- the search does not find `BalancedFinetune`.
It saves full-page screenshots of the home page, a tutorial and an API page to `_docs/screenshots/` for a person to look at.
"""
import functools, http.server, json, re, socketserver, sys, threading
from pathlib import Path
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
DOCS, PROC = ROOT/'_docs', ROOT/'_proc'
CHROMIUM = '/usr/bin/chromium'
SHOTS = {'index': 'home', '10_tutorial_many_classes': 'tutorial', '03_finetune': 'api'}
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run', '--disable-quic']
PLOT_CALL = re.compile(r'^(?!\s*(def |#|@)).*(\bplot_\w+\(|\.plot\w*\(|show_images\(|show_batch\(|plt\.(subplots|figure)\()', re.M)
ABS_PATH = re.compile(r'(?<![\w.])/(?:home|root|tmp|work|Users|mnt|private|var/folders)/[\w.\-]+|(?<![\w.])/[\w.\-/]+/site-packages/|[A-Z]:\\Users\\')  # a machine's folders, not /usr/bin/chromium in prose
PAGE_JS = """() => {
  const body = document.querySelector('article') || document.body;
  const outs = [...body.querySelectorAll('.jp-OutputArea-output')];
  const imgs = [...body.querySelectorAll('img')];
  const wide = [...body.querySelectorAll('table')].filter(t => {
      const box = t.getBoundingClientRect(), art = body.getBoundingClientRect();
      const scrolls = ['auto', 'scroll'].includes(getComputedStyle(t).overflowX) || ['auto', 'scroll'].includes(getComputedStyle(t.parentElement).overflowX);
      return box.right > art.right + 1 && !scrolls;
  }).length;
  return {tracebacks: outs.map(o => o.innerText).filter(t => /Traceback \\(most recent call last\\)/.test(t)).map(t => t.slice(0, 300)),
          stderr: body.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]').length,
          images: imgs.filter(i => (i.getAttribute('src') || '').startsWith('data:image')).length,
          broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.getAttribute('src') || '').slice(0, 60)),
          sideways: document.documentElement.scrollWidth > window.innerWidth + 1, wide: wide,
          links: [...body.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
          ids: [...document.querySelectorAll('[id]')].map(e => e.id),
          text: body.innerText, title: document.title};
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

def serve(folder):
    "A localhost server of `folder` in a thread: (base url, server)"
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    handler = functools.partial(Quiet, directory=str(folder))
    srv = socketserver.TCPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f'http://127.0.0.1:{srv.server_address[1]}/', srv

def check_page(page, stem, proc=PROC):
    "What is wrong with the page `page` has open, as a list of sentences"
    r = page.evaluate(PAGE_JS)
    want, nb_errs, unplotted = notebook_facts(proc/f'{stem}.ipynb') if (proc/f'{stem}.ipynb').exists() else (0, 0, [])
    bad = []
    if len(r['text']) < 200: bad.append(f"almost empty page ({len(r['text'])} characters)")
    if r['tracebacks'] or nb_errs: bad.append(f"{max(len(r['tracebacks']), nb_errs)} error output(s): {r['tracebacks'][:1]}")
    if r['stderr']: bad.append(f"{r['stderr']} stderr box(es)")
    shown = sorted(set(re.findall(r'#\| ?[a-z_]+:?[^\n]{0,20}', r['text'])))
    if shown: bad.append(f"notebook directive(s) shown: {shown[:3]}")
    if '{target=' in r['text']: bad.append('Quarto link attributes shown as text ({target=...})')
    paths = sorted(set(ABS_PATH.findall(r['text'])))
    if paths: bad.append(f"absolute path(s) of a machine: {paths[:3]}")
    if r['broken']: bad.append(f"{len(r['broken'])} image(s) that did not load: {r['broken'][:2]}")
    if r['images'] < want: bad.append(f"{want} image outputs in the notebook, {r['images']} in the page")
    if unplotted: bad.append(f"plotting cell(s) without a plot: {unplotted}")
    if r['sideways']: bad.append('the page scrolls sideways')
    if r['wide']: bad.append(f"{r['wide']} table(s) wider than the page that do not scroll")
    return bad, r

def bad_links(pages:dict, site:str):
    "Links of each page that go nowhere: another page or anchor of this site that does not exist, or the published site (not these pages)"
    out = {}
    for stem, r in pages.items():
        for h in r['links']:
            if h.startswith(site): out.setdefault(stem, []).append(h); continue
            if re.match(r'[a-z]+:', h) or h.startswith('//'): continue  # elsewhere on the web: not checked offline
            page, _, anchor = h.partition('#')
            target = page.split('/')[-1].removesuffix('.html') if page else stem
            if page and not page.endswith('.html'): continue  # an image, the search index, an asset
            if target not in pages or (anchor and anchor not in pages[target]['ids']): out.setdefault(stem, []).append(h)
    return out

def search_finds(page, base, term='BalancedFinetune'):
    "The number of results the site's search lists for `term`"
    page.goto(base + 'index.html', wait_until='load')
    page.locator('input.md-search__input').click()
    page.keyboard.type(term)
    try: page.wait_for_selector('.md-search-result__item', timeout=15000)
    except Exception: return 0
    return page.locator('.md-search-result__item').count()

def main(docs=DOCS, proc=PROC, shots=SHOTS):
    if not (docs/'index.html').exists(): sys.exit(f'no site in {docs}: run `make docs` first')
    if not Path(CHROMIUM).exists(): sys.exit(f'{CHROMIUM} not found: install Debian\'s chromium package (`make chromium`)')
    (docs/'screenshots').mkdir(exist_ok=True)
    failures = []
    base, srv = serve(docs)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        errors = []
        page.on('pageerror', lambda e: errors.append(str(e)))
        page.goto(base + 'index.html', wait_until='load')
        links = page.evaluate("() => [...document.querySelectorAll('nav.md-nav--primary a.md-nav__link[href]')].map(a => a.getAttribute('href'))")
        stems,seen = [],{}
        for h in links:
            s = h.split('#')[0].split('/')[-1].removesuffix('.html') or 'index'
            if s not in stems: stems.append(s)
        missing = sorted({p.stem for p in proc.glob('*.ipynb')} - set(stems))
        if missing: failures.append(f'processed notebooks with no sidebar link: {missing}')
        for s in stems:
            errors.clear()
            resp = page.goto(base + f'{s}.html', wait_until='load')
            if resp is None or resp.status != 200: failures.append(f'{s}.html: sidebar link does not open ({resp and resp.status})'); continue
            bad, r = check_page(page, s, proc); seen[s] = r
            if errors: bad.append(f"script errors: {errors[:2]}")
            print(f"{s + '.html':40s} {r['images']:2d} plots  {'OK' if not bad else 'FAIL: ' + '; '.join(bad)}")
            if bad: failures.append(f'{s}.html')
            if s in shots: page.screenshot(path=str(docs/'screenshots'/f'{shots[s]}_{s}.png'), full_page=True)
        site = 'https://fastai-imbalance.github.io/fastai_imbalance/'
        for s, hs in bad_links(seen, site).items():
            print(f"{s + '.html':40s} FAIL: {len(hs)} link(s) to no page or anchor here: {sorted(set(hs))[:4]}"); failures.append(f'{s}.html links')
        n = search_finds(page, base)
        print(f"search for 'BalancedFinetune': {n} result(s)")
        if not n: failures.append('the search finds nothing for BalancedFinetune')
        browser.close()
    srv.shutdown()
    gone = [s for s in shots if not (docs/'screenshots'/f'{shots[s]}_{s}.png').exists()]
    if gone: failures.append(f'no page for screenshot(s) {gone}')
    print(f"{len(stems)} sidebar pages checked in headless Chromium; screenshots in {docs/'screenshots'}")
    if failures: sys.exit(f'docs check failed: {failures}')

if __name__ == '__main__': main()
