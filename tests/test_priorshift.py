"PriorShift (work in progress, issue 5): Bayes' rule on logits, calibration, EM/BBSE estimates, bad input, export."
import re, warnings
import numpy as np, pytest, torch
from fastai.vision.all import ImageDataLoaders, vision_learner, load_learner, CrossEntropyLossFlat
from fastai_imbalance.core import class_priors
from fastai_imbalance.data import ResampledDL
from fastai_imbalance.priorshift import (check_priors, prior_shift_logits, calibrate, em_priors, bbse_priors, PriorShift, noop_act)
from conftest import tiny_arch


def calibrated_posteriors(n, k, pi_t, pi_s, a=3., seed=0):
    "x = a*onehot(y) + N(0, I): p(y|x) under pi_s is softmax(a*x + log pi_s), exactly calibrated"
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.as_tensor(pi_t).float(), n, replacement=True, generator=g)
    x = torch.randn(n, k, generator=g, dtype=torch.float64); x[torch.arange(n), y] += a
    return (a * x + torch.log(torch.as_tensor(pi_s, dtype=torch.float64))).softmax(1), y


@pytest.mark.parametrize('seed', range(3))
def test_bayes_rule_to_1e_6(seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(50, 7, generator=g, dtype=torch.float64) * 3
    ps, pt = torch.rand(7, generator=g, dtype=torch.float64) + .01, torch.rand(7, generator=g, dtype=torch.float64) + .01
    ps, pt = ps / ps.sum(), pt / pt.sum()
    bayes = z.softmax(1) * pt / ps
    assert torch.allclose(prior_shift_logits(z, pt, ps).softmax(1), bayes / bayes.sum(1, keepdim=True), atol=1e-6)
    # multilabel: independent binary shifts of each sigmoid
    ps, pt = ps.clamp(.05, .95), pt.clamp(.05, .95)
    p = z.sigmoid()
    b = p * pt / ps; b = b / (b + (1 - p) * (1 - pt) / (1 - ps))
    assert torch.allclose(prior_shift_logits(z, pt, ps, multilabel=True).sigmoid(), b, atol=1e-6)


@pytest.mark.parametrize('k', [3, 20])
def test_em_recovers_known_priors(k):
    rng = np.random.default_rng(k)
    pi_s, pi_t = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
    P, y = calibrated_posteriors(30_000, k, pi_t, pi_s)
    true = torch.bincount(y, minlength=k).double() / len(y)
    est = em_priors(P, pi_s)
    assert (est - true).abs().sum() < 0.05, (est - true).abs().sum()
    assert (torch.as_tensor(pi_s) - true).abs().sum() > 0.3  # the shift was real


def test_bbse_and_calibration():
    k = 5; rng = np.random.default_rng(0)
    pi_s, pi_t = np.full(k, 1 / k), rng.dirichlet(np.ones(k))
    Pv, yv = calibrated_posteriors(5000, k, pi_s, pi_s, seed=1)
    Pt, yt = calibrated_posteriors(5000, k, pi_t, pi_s, seed=2)
    est = bbse_priors(Pv, yv, Pt, pi_s)
    assert (est - torch.bincount(yt, minlength=k).double() / 5000).abs().sum() < 0.1
    z = torch.log(Pv)
    cal = calibrate(z * 2.5, yv, 'ts')  # over-confident by 2.5
    assert abs(cal.log_t.exp().item() - 2.5) < 0.2
    for m in ('bcts', 'vs'):
        c = calibrate(z * 2.5 + torch.randn(k, dtype=torch.float64), yv, m)
        assert torch.nn.functional.cross_entropy(c(z * 2.5), yv) < torch.nn.functional.cross_entropy(z * 2.5, yv)


def test_em_warns_on_non_convergence():
    P, _ = calibrated_posteriors(2000, 10, np.full(10, .1), np.full(10, .1), a=0.5)
    with pytest.warns(UserWarning, match='did not converge in 2 iterations'): em_priors(P, np.full(10, .1), max_iter=2)


@pytest.mark.parametrize('call,msg', [
    (lambda: check_priors([.5, .6]), "sum to 1.1, not 1"),
    (lambda: check_priors([.5, .5], k=3), "has 2 entries but the model has 3 classes"),
    (lambda: check_priors([1.2, -.2]), "found [-0.2] at positions [1]"),
    (lambda: check_priors([np.nan, 1.]), "must be finite"),
    (lambda: check_priors([0., 0.]), "all zero"),
    (lambda: check_priors([[.5, .5]]), "must be 1-d"),
    (lambda: check_priors([.5, 1.5], multilabel=True), "must lie in [0, 1]"),
    (lambda: prior_shift_logits(torch.tensor([[0., float('inf')]]), torch.tensor([.5, .5]), torch.tensor([.5, .5])), "NaN or inf (first at [0, 1]: inf)"),
    (lambda: prior_shift_logits(torch.zeros(1, 2), torch.tensor([.5, .5]), torch.tensor([1., 0.])), "source prior of class [1] is 0"),
    (lambda: prior_shift_logits(torch.zeros(1, 3), torch.tensor([.5, .5]), torch.tensor([.2, .3, .5])), "target priors have 2 entries but the model outputs 3 classes"),
    (lambda: em_priors(torch.zeros(0, 3), [1/3] * 3), "non-empty (n, k)"),
    (lambda: em_priors(torch.tensor([[.5, float('nan')]]), [.5, .5]), "contain NaN or inf"),
    (lambda: em_priors(torch.tensor([[.5, .5]]), [1., 0.]), "source prior of class [1] is 0"),
    (lambda: calibrate(torch.zeros(0, 3), torch.zeros(0)), "got none"),
    (lambda: calibrate(torch.zeros(2, 3), torch.zeros(2), 'platt'), "unknown calibration 'platt'"),
])
def test_bad_input(call, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): call()


def test_callback_on_real_images_export_and_double_correction(lt_path, tmp_path):
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    p0, y = learn.get_preds()
    learn.add_cb(PriorShift('uniform'))
    p1, _ = learn.get_preds()
    b = p0 / class_priors(dls); b = b / b.sum(1, keepdim=True)
    assert torch.allclose(p1, b, atol=1e-5)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)  # training is unaffected, and inference stays corrected
    learn.export(tmp_path/'ps.pkl')
    l2 = load_learner(tmp_path/'ps.pkl')
    img = next((lt_path/'valid'/'9').glob('*.png'))
    assert torch.allclose(l2.predict(img)[2], learn.predict(img)[2], atol=1e-5)
    # a class-balanced loader with the default source warns of double correction
    rdls = dls.resampled('balanced')
    l3 = vision_learner(rdls, tiny_arch, pretrained=False, cbs=PriorShift('uniform'))
    with pytest.warns(UserWarning, match="would correct twice; pass source='sampled'"): l3.get_preds()
    l4 = vision_learner(rdls, tiny_arch, pretrained=False, cbs=PriorShift('uniform', source='sampled'))
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        try: l4.get_preds()
        except UserWarning as w: assert 'correct twice' not in str(w)


def test_estimate_and_adapt(lt_path):
    from fastai.vision.all import get_image_files
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    files = [f for f in get_image_files(lt_path/'valid') if f.parent.name in ('0', '1')]  # a target set with only two classes
    tdl = dls.test_dl(files)
    with learn.no_bar():
        pi = learn.estimate_priors(tdl, method='em', calibrate='bcts')
        cb = learn.adapt_to(tdl)
    assert pi.shape == (10,) and abs(pi.sum() - 1) < 1e-9 and pi.min() >= 0
    assert sum(isinstance(c, PriorShift) for c in learn.cbs) == 1 and cb.calibration is not None
    with pytest.raises(ValueError, match="unknown method 'kmm'"): learn.estimate_priors(tdl, method='kmm')
    with pytest.raises(ValueError, match='unlabelled data set is empty'): learn.estimate_priors(torch.utils.data.DataLoader([]))
