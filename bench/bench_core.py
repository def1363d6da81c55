"""Counting classes of a 500,000-image, 5,000-class catalogue: `class_counts` vs the naive routes.

    python bench/bench_core.py [--n 500000] [--k 5000]

The `Datasets` is built the fastai way (`PILImage.create` for inputs, `parent_label` + `Categorize` for
labels) over paths that do not exist, except the first, which fastai itself opens once to set up the
input pipeline. So `class_counts` finishing at all shows it opens no image; its time is compared with
(a) iterating fastai's label pipeline item by item and (b) iterating the `Datasets` itself, which also
opens and decodes every image (timed on the real digits_lt images and extrapolated to n items).
"""
import argparse, gc, shutil, tempfile, time, warnings
from pathlib import Path
import numpy as np
warnings.filterwarnings('ignore')
from fastai.vision.all import Datasets, PILImage, parent_label, Categorize, IndexSplitter, ImageDataLoaders
from fastai_imbalance.core import class_counts
from fastai_imbalance.datasets import digits_lt


def best_of(f, n=3):
    ts = []
    for _ in range(n):
        gc.collect(); t = time.perf_counter(); r = f(); ts.append(time.perf_counter() - t)
    return min(ts), r


def main(n, k, seed=0):
    rng = np.random.default_rng(seed)
    y = np.minimum(rng.zipf(1.3, n) - 1, k - 1)  # long-tailed class sizes
    y[:k] = np.arange(k)  # every class present
    rng.shuffle(y)
    tmp = Path(tempfile.mkdtemp())
    real = next((digits_lt(tmp/'lt')/'train'/'0').glob('*.png'))
    items = [Path(f'/catalogue/train/c{c:04d}/{i:07d}.jpg') for i,c in enumerate(y)]
    items[0] = real; y[0] = 0
    (tmp/'c0000').mkdir(); shutil.copy(real, tmp/'c0000'/'first.png'); items[0] = tmp/'c0000'/'first.png'
    t = time.perf_counter()
    dsets = Datasets(items, [[PILImage.create], [parent_label, Categorize(vocab=[f'c{c:04d}' for c in range(k)])]],
                     splits=IndexSplitter([])(items))
    t_build = time.perf_counter() - t
    print(f'{n:,} items, {k:,} classes, largest class {np.bincount(y).max():,}, smallest {np.bincount(y).min()}; '
          f'Datasets built by fastai in {t_build:.2f} s (not part of counting)')

    t_ours, counts = best_of(lambda: class_counts(dsets))
    assert (counts.values == np.bincount(y, minlength=k)).all()

    tl = dsets.train.tls[1]
    def naive_labels(): return np.bincount([int(tl[i]) for i in range(len(tl))], minlength=k)
    t_naive, ref = best_of(naive_labels, 1)
    assert (ref == counts.values).all()

    dls = ImageDataLoaders.from_folder(tmp/'lt', valid='valid', num_workers=0)
    ds = dls.train_ds
    m = len(ds)
    t = time.perf_counter()
    for i in range(m): ds[i]
    per_item = (time.perf_counter() - t) / m
    t_full = per_item * n

    print(f'class_counts (label pipeline, vectorised):          {t_ours:7.3f} s   (target <= 2 s: {"met" if t_ours <= 2 else "MISSED"})')
    print(f'naive: fastai label pipeline, item by item:         {t_naive:7.3f} s   ratio {t_naive / t_ours:6.1f}x slower')
    print(f'naive: iterating the Datasets (opens every image):  {t_full:7.1f} s   ratio {t_full / t_ours:6.0f}x slower '
          f'(extrapolated from {m} real digits_lt images at {per_item*1e3:.2f} ms each)')
    shutil.rmtree(tmp)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=500_000)
    p.add_argument('--k', type=int, default=5_000)
    a = p.parse_args()
    main(a.n, a.k)
