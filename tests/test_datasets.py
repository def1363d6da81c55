"The embedded digit sets: real scans, exact shapes, deterministic, reusable, safe to build concurrently."
import hashlib, json, re, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from fastai.vision.data import ImageDataLoaders
from fastai_imbalance.core import class_counts
from fastai_imbalance.datasets import digits_lt, digits_rare, digits_multilabel, lt_counts, _digits


def digest(path):
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob('*.png')): h.update(f.relative_to(path).as_posix().encode()); h.update(f.read_bytes())
    return h.hexdigest()


def scan_ids(path, split): return {int(f.stem) for f in (Path(path)/split).rglob('*.png')}


def test_lt_layout_and_real_scans(lt_path):
    counts = [len(list((lt_path/'train'/str(c)).glob('*.png'))) for c in range(10)]
    assert counts == [100, 60, 36, 22, 13, 8, 5, 3, 2, 1]
    assert [len(list((lt_path/'valid'/str(c)).glob('*.png'))) for c in range(10)] == [50] * 10
    assert not scan_ids(lt_path, 'train') & scan_ids(lt_path, 'valid')
    imgs, y = _digits()
    f = next((lt_path/'train'/'3').glob('*.png'))
    assert y[int(f.stem)] == 3  # the file is named after its scan, and the scan is a 3
    im = Image.open(f)
    assert im.size == (32, 32) and im.mode == 'L'
    small = np.asarray(im.resize((8, 8), Image.Resampling.BOX), dtype=float)
    assert np.corrcoef(small.ravel(), imgs[int(f.stem)].ravel().astype(float))[0, 1] > 0.9  # the upscaled scan, not noise


def test_lt_deterministic_reused_and_seeded(tmp_path):
    a, b = digits_lt(tmp_path/'a', seed=3), digits_lt(tmp_path/'b', seed=3)
    assert digest(a) == digest(b)
    mtime = (a/'manifest.json').stat().st_mtime_ns
    assert digits_lt(a, seed=3) == a and (a/'manifest.json').stat().st_mtime_ns == mtime  # reused, not rewritten
    assert digest(digits_lt(tmp_path/'c', seed=4)) != digest(a)
    with pytest.raises(ValueError, match='built with'): digits_lt(a, seed=5)  # another set's folder is never overwritten


def test_lt_other_ratios(tmp_path):
    p = digits_lt(tmp_path/'r10', imbalance=10, size=16)
    dls = ImageDataLoaders.from_folder(p, valid='valid', bs=4, num_workers=0)
    c = class_counts(dls).values
    assert c.tolist() == lt_counts(120, 10) and c.max() / c.min() == 10
    assert dls.one_batch()[0].shape[-2:] == (16, 16)


@pytest.mark.parametrize('kw,msg', [
    (dict(imbalance=10_000), 'the largest ratio possible here is 124:1'),
    (dict(imbalance=0.5), 'imbalance must be >= 1'),
    (dict(n_valid_per_class=200), 'leaves no training scan: digit 0 has 178 scans'),
])
def test_lt_bad_input(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg): digits_lt(tmp_path/'x', **kw)


def test_not_a_digits_folder(tmp_path):
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'precious.txt').write_text('x')
    with pytest.raises(ValueError, match='has no manifest'): digits_lt(tmp_path/'mine')
    assert (tmp_path/'mine'/'precious.txt').exists()


def test_concurrent_builds(tmp_path):
    code = f"from fastai_imbalance.datasets import digits_lt; print(digits_lt({str(tmp_path/'same')!r}, size=12))"
    procs = [subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1].decode()[-500:] for o in outs]
    assert len(list((tmp_path/'same').rglob('*.png'))) == 250 + 500
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


def test_rare(tmp_path):
    p = digits_rare(tmp_path/'rare')
    dls = ImageDataLoaders.from_folder(p, valid='valid', bs=8, num_workers=0)
    c = class_counts(dls)
    assert c.index.tolist() == ['negative', 'positive']
    assert 180 <= c['negative'] / c['positive'] <= 220
    assert class_counts(dls, split='valid').values.tolist() == [450, 50]
    _, y = _digits()
    assert all(y[i] == 3 for i in scan_ids(p/'train', 'positive')) and all(y[i] != 3 for i in scan_ids(p/'train', 'negative'))
    assert not scan_ids(p, 'train') & scan_ids(p, 'valid')
    with pytest.raises(ValueError, match='positive must be a digit'): digits_rare(tmp_path/'x', positive=10)


def test_multilabel(ml_path):
    df = pd.read_csv(ml_path/'labels.csv', keep_default_na=False, dtype={'labels': str, 'scans': str})
    assert len(df) == 1300 and df.is_valid.sum() == 300
    _, y = _digits()
    tiles = df.scans.str.split().map(lambda t: [int(i) for i in t if i != '-'])
    assert tiles.map(len).min() >= 1  # never an empty mosaic
    assert (tiles.map(lambda t: ' '.join(str(d) for d in sorted({int(y[i]) for i in t}))) == df.labels).all()  # labels = digits shown
    train_scans = set().union(*tiles[~df.is_valid]); valid_scans = set().union(*tiles[df.is_valid])
    assert not train_scans & valid_scans
    freq = df[~df.is_valid].labels.str.split().explode().value_counts()
    assert freq['0'] > 5 * freq['9']
    im = Image.open(ml_path/df.fname[0])
    assert im.size == (32, 32)
    dls = ImageDataLoaders.from_df(df, ml_path, fn_col='fname', label_col='labels', label_delim=' ', valid_col='is_valid', bs=8, num_workers=0)
    xb, yb = dls.one_batch()
    assert yb.shape == (8, 10) and set(yb.unique().tolist()) <= {0., 1.}


def test_multilabel_deterministic(tmp_path):
    a = digits_multilabel(tmp_path/'a', n_train=40, n_valid=10, seed=7)
    b = digits_multilabel(tmp_path/'b', n_train=40, n_valid=10, seed=7)
    assert digest(a) == digest(b) and (a/'labels.csv').read_text() == (b/'labels.csv').read_text()
    with pytest.raises(ValueError, match='p_blank'): digits_multilabel(tmp_path/'c', p_blank=1.)


def test_glyphs_lt_many_classes_long_tail(tmp_path):
    "glyphs_lt: distinct classes, an exponential tail down to one image, balanced validation, deterministic for a seed, refused sizes named"
    from fastai_imbalance.datasets import glyphs_lt, glyph_classes, lt_counts
    from fastai_imbalance.core import class_counts
    from fastai.vision.all import ImageDataLoaders
    pool = glyph_classes()
    assert 1_000 < len(pool) < 3_300 and all(len(f) >= 8 for f in pool.values())
    assert len({ord(c) for c in 'OoΟО'} & set(pool)) == 1 and len({ord(c) for c in 'XxХх'} & set(pool)) == 1  # Latin, Greek, Cyrillic look-alikes: one class
    assert {ord('0'), ord('O')} <= set(pool)  # the narrower zero is a class of its own
    p = glyphs_lt(tmp_path/'g', n_classes=60, n_max=12, n_valid_per_class=2)
    dls = ImageDataLoaders.from_folder(p, valid='valid', bs=16, num_workers=0)
    c = class_counts(dls)
    assert len(c) == 60 and sorted(c.values, reverse=True) == lt_counts(12, 12, 60) and c.min() == 1
    assert set(class_counts(dls, split='valid').values) == {2}
    q = glyphs_lt(tmp_path/'h', n_classes=60, n_max=12, n_valid_per_class=2)
    a, b = sorted((p/'train').rglob('*.png')), sorted((q/'train').rglob('*.png'))
    assert [f.relative_to(p) for f in a] == [f.relative_to(q) for f in b] and all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    with pytest.raises(ValueError, match=f'n_classes must lie in 2..{len(pool)}'): glyphs_lt(tmp_path/'x', n_classes=len(pool) + 1)
    with pytest.raises(ValueError, match='n_classes must be >= 2'): glyphs_lt(tmp_path/'y', n_classes=1)


def test_glyphs_lt_faces_without_ink(tmp_path):
    "A face listed for a code point may draw no ink at the set's size (U+1D3D in DejaVuSansMono-Oblique): seeds 2 and 3 crashed on it"
    from fastai_imbalance.datasets import glyphs_lt
    assert (glyphs_lt(tmp_path/'s2', seed=2)/'manifest.json').exists()


def test_photos_lt_counts_classes_and_reuse(tmp_path):
    from fastai_imbalance.datasets import photos_lt, lt_counts, _manifest
    p = photos_lt(tmp_path/'p', n_classes=12, n_max=40, imbalance=20, n_valid_per_class=4, size=24)
    dls = ImageDataLoaders.from_folder(p, valid='valid', bs=16, num_workers=0)
    c = class_counts(dls)
    assert len(c) == 12 and sorted(c.values, reverse=True) == lt_counts(40, 20, 12)
    assert set(class_counts(dls, split='valid').values) == {4}
    assert all(re.fullmatch(r'(china|flower|grace_hopper)_r[0-2]c[0-2]', v) for v in dls.vocab)
    assert photos_lt(tmp_path/'p', n_classes=12, n_max=40, imbalance=20, n_valid_per_class=4, size=24) == p  # reused
    other = photos_lt(tmp_path/'q', n_classes=12, n_max=40, imbalance=20, n_valid_per_class=4, size=24, seed=1)
    assert _manifest(other)['files'] != _manifest(p)['files']
    with pytest.raises(ValueError, match=re.escape("n_classes must lie in 2..27")): photos_lt(tmp_path/'r', n_classes=1)


def test_photo_crops_stay_inside_their_part_of_the_cell():
    "A crop never leaves its box: on an image that is bright only inside the box, every crop pixel is bright"
    from fastai_imbalance.datasets import _photo_crop
    rng = np.random.default_rng(0)
    img = np.zeros((142, 213, 3), np.uint8)
    for box in ((0, 0, 142, 142), (0, 142, 142, 213)):  # a cell's training part (left two thirds) and its validation part
        img[:] = 0; t,l,b,r = box; img[t:b, l:r] = 255
        assert all(_photo_crop(img, box, rng, 32).min() >= 200 for _ in range(200))
