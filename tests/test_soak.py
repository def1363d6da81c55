"""Soak: 1,000 resampled epochs over a 5,000-class long-tailed label set, through the loader's own training path.

Checks the class frequencies (each epoch within one draw of the expected count, the long-run means unbiased by a
chi-square test, items of a large class used evenly), that no index leaves the data set, and that memory does not grow
across epochs. Marked slow (it runs in CI; about 10 s here).
"""
import tracemalloc
import numpy as np, pytest, torch
from scipy import stats
from fastai_imbalance.data import ResampledDL

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('strategy', ['balanced', 'sqrt'])
def test_thousand_epochs_on_five_thousand_classes(strategy):
    C, epochs = 5000, 1000
    sizes = np.maximum(1, (2000 / np.arange(1, C + 1))).astype(int)  # Zipf: 2000 items of the first class ... 1 of the last 4,000
    y = np.random.default_rng(0).permutation(np.repeat(np.arange(C), sizes))
    N = len(y)
    dl = ResampledDL(list(range(N)), labels=y, bs=256, strategy=strategy, num_workers=0)
    e = dl.expected_counts()
    assert e.sum() == pytest.approx(N)
    big = int(np.argmax(sizes))
    per_class = np.zeros(C); big_items = np.zeros(N, np.int64)
    tracemalloc.start()
    mem = []
    for ep in range(epochs):
        dl.before_iter(); idx = np.asarray(dl.get_idxs())  # what DataLoader.__iter__ does before a training pass
        assert idx.min() >= 0 and idx.max() < N and len(idx) == N          # no index out of range, one epoch's worth
        c = np.bincount(y[idx], minlength=C)
        assert (np.abs(c - e) < 1 + 1e-9).all()                             # every class within one draw of its expectation
        per_class += c
        big_items += np.bincount(idx[y[idx] == big], minlength=N)
        if ep in (9, epochs - 1): mem.append(tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    # long-run means: unbiased. A count is floor(e) or ceil(e), so its variance is f(1-f), f = e - floor(e): chi-square over the classes with f > 0
    f = e - np.floor(e)
    var = f * (1 - f)
    v = var > 1e-9
    z2 = ((per_class[v] / epochs - e[v]) ** 2 / (var[v] / epochs))
    assert z2.sum() < stats.chi2.ppf(0.9999, v.sum()), (z2.sum(), v.sum())
    # the largest class's items are used evenly
    used = big_items[y == big]
    assert stats.chisquare(used).pvalue > 1e-4
    # memory: what stays allocated after epoch 10 and after epoch 1,000 is the same, within 1 MB
    assert mem[1] - mem[0] < 1_000_000, mem
    print(f"\n{strategy}: {C} classes, {N} items, {epochs} epochs: largest |mean count per epoch - expected| over the classes {np.abs(per_class / epochs - e).max():.4f}, "
          f"chi-square {z2.sum():.0f} on {v.sum()} df (0.9999 quantile {stats.chi2.ppf(0.9999, v.sum()):.0f}); largest class's items: p={stats.chisquare(used).pvalue:.3f}; "
          f"traced memory after epoch 10 {mem[0] / 1e6:.2f} MB, after epoch {epochs} {mem[1] / 1e6:.2f} MB")
