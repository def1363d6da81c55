"""Each loss against its paper's formula on small tensors, fastai's conventions (FocalLoss's arguments, BCEWithLogitsLossFlat's reduction, y_int),
the weights in reduction='none', finite gradients at confident logits, gradcheck (float64), buffers, export, and bad input."""
import re
import numpy as np, pytest, torch
import torch.nn.functional as F
from sklearn.metrics import cohen_kappa_score
from fastai_imbalance.core import class_weights
from fastai_imbalance.losses import (FocalLoss, ClassBalancedLoss, LogitAdjustedLoss, BalancedSoftmaxLoss, LDAMLoss, PairwiseAUCLoss, SoftKappaLoss,
                                     PosWeightBCELoss, FocalBCELoss, AsymmetricLoss, SoftmaxMultilabelLoss, NormedLinear, cosine_classifier)

g = torch.Generator().manual_seed(0)
X = torch.randn(12, 4, generator=g, dtype=torch.float64)
Y = torch.tensor([0, 1, 2, 3, 0, 0, 1, 2, 0, 0, 0, 1])
N = [50, 20, 5, 1]
YM = (torch.rand(12, 4, generator=g) < .4).double()


def test_focal_and_class_balanced_formulas():
    a = torch.tensor([1., 2., 3., 4.], dtype=torch.float64)
    p = X.softmax(1)[torch.arange(12), Y]
    want = (a[Y] * -(1 - p) ** 2.5 * p.log()).sum() / a[Y].sum()
    assert torch.allclose(FocalLoss(2.5, alpha=a).double()(X, Y), want)
    assert torch.allclose(FocalLoss(0.)(X, Y), F.cross_entropy(X, Y))
    w = class_weights(counts=N, method='effective', beta=.99).double()
    assert torch.allclose(ClassBalancedLoss(counts=N, beta=.99).double()(X, Y), (w[Y] * F.cross_entropy(X, Y, reduction='none')).sum() / len(Y))  # Cui et al.: divided by N
    beta = .99; e = (1 - beta) / (1 - beta ** np.array(N)); e = e * 4 / e.sum()  # Cui et al.'s weights, by hand
    assert np.allclose(ClassBalancedLoss(counts=N, beta=beta).alpha.numpy(), e, atol=1e-6)


def test_logit_adjusted_balanced_softmax_ldam_formulas():
    n = torch.tensor(N, dtype=torch.float64)
    for tau in (.5, 1., 2.):
        assert torch.allclose(LogitAdjustedLoss(counts=N, tau=tau).double()(X, Y), F.cross_entropy(X + tau * torch.log(n / n.sum()), Y))
    assert torch.allclose(BalancedSoftmaxLoss(counts=N).double()(X, Y), F.cross_entropy(X + torch.log(n), Y))
    m = n ** -.25; m = m * .4 / m.max()
    C = X.tanh()  # cosine logits, as a normalised classifier gives
    z = C.clone(); z[torch.arange(12), Y] -= m[Y]
    assert torch.allclose(LDAMLoss(counts=N, max_m=.4).double()(C, Y), F.cross_entropy(30 * z, Y))  # the paper's s=30
    w = torch.tensor([1., 1., 2., 3.], dtype=torch.float64)
    assert torch.allclose(LDAMLoss(counts=N, weight=w, s=1.).double()(X, Y), F.cross_entropy(X - F.one_hot(Y, 4) * (n ** -.25 * .5 / (n ** -.25).max())[Y][:, None], Y, weight=w))


def test_auc_and_kappa_surrogates():
    s, y = torch.tensor([2., 0., 1.]), torch.tensor([1, 0, 0])
    assert PairwiseAUCLoss()(s, y).item() == 0.  # both pairs ranked with the margin
    assert PairwiseAUCLoss()(torch.tensor([0., 1.]), torch.tensor([1, 0])).item() == pytest.approx(4.)  # (1 - (0 - 1))^2
    assert PairwiseAUCLoss()(torch.tensor([0., 1.]), torch.tensor([0, 0])).item() == 0.  # no positive: no pair
    two = torch.tensor([[0., 2.], [0., 0.], [0., 1.]])
    assert PairwiseAUCLoss()(two, y) == PairwiseAUCLoss()(s, y)
    hard = F.one_hot(torch.tensor([0, 1, 2, 2, 1, 0, 3, 3]), 4).double() * 60  # near one-hot softmax: soft kappa = kappa
    yk = torch.tensor([0, 1, 2, 1, 1, 0, 3, 2])
    k = cohen_kappa_score(yk, hard.argmax(1), weights='quadratic')
    assert SoftKappaLoss(log=False)(hard, yk).item() == pytest.approx(1 - k, abs=1e-6)
    assert SoftKappaLoss()(hard, yk).item() == pytest.approx(np.log(1 - k), abs=1e-5)


def test_multilabel_formulas():
    n_pos = YM.sum(0); n = 12
    pw = ((n - n_pos) / n_pos) ** .5
    # every (item, label) term averaged, as fastai's BCEWithLogitsLossFlat
    assert torch.allclose(PosWeightBCELoss(counts=n_pos.numpy(), n_items=n).double()(X, YM), F.binary_cross_entropy_with_logits(X, YM, pos_weight=pw))
    p = torch.sigmoid(X); pt = torch.where(YM == 1, p, 1 - p); at = torch.where(YM == 1, .25, .75)
    assert torch.allclose(FocalBCELoss(2., alpha=.25)(X, YM), (-(at * (1 - pt) ** 2 * pt.log())).mean())
    for g_ in (.5, 1.5):
        assert torch.allclose(FocalBCELoss(g_)(X, YM), (-((1 - pt) ** g_ * pt.log())).mean())
    pm = (p - .05).clamp_min(0)
    asl = -(YM * (1 - p) ** 1 * p.log() + (1 - YM) * pm ** 4 * torch.log(1 - pm))
    assert torch.allclose(AsymmetricLoss(1., 4., .05)(X, YM), asl.mean())
    assert torch.allclose(AsymmetricLoss(1., 4., .05, reduction='none')(X, YM), asl) and torch.allclose(AsymmetricLoss(1., 4., .05, reduction='sum')(X, YM), asl.sum())
    assert torch.allclose(AsymmetricLoss(0., 2., 0.)(X, YM), -(YM * p.log() + (1 - YM) * p ** 2 * torch.log(1 - p)).mean())
    from fastai.losses import BCEWithLogitsLossFlat
    assert PosWeightBCELoss(power=0.)(X, YM).item() == pytest.approx(BCEWithLogitsLossFlat()(X, YM).item(), rel=1e-6)  # no weights: fastai's loss, same scale
    k = YM.sum(1, keepdim=True).clamp_min(1)
    assert torch.allclose(SoftmaxMultilabelLoss(k=2)(X, YM), (-(YM / k) * X.log_softmax(1)).sum(1).mean())
    dec = SoftmaxMultilabelLoss(k=2).decodes(torch.tensor([[.1, .5, .3, .1]]))
    assert dec.tolist() == [[False, True, True, False]]


@pytest.mark.parametrize('loss,y', [(FocalLoss(2., alpha=[1., 2., 3., 4.]), Y), (FocalLoss(.5, weight=[1., 2., 3., 4.]), Y), (LogitAdjustedLoss(counts=N), Y), (LDAMLoss(counts=N, s=1.), Y),
                                    (SoftKappaLoss(), Y), (FocalBCELoss(), YM), (AsymmetricLoss(1., 4.), YM), (SoftmaxMultilabelLoss(k=2), YM),
                                    (PosWeightBCELoss(counts=[3, 4, 5, 6], n_items=12), YM)])
def test_gradcheck(loss, y):
    loss = loss.double()
    x = (X * .5).clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (x,), eps=1e-6, atol=1e-5)


def test_auc_gradcheck():
    s = torch.tensor([.3, -.2, .1, .4, -.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: PairwiseAUCLoss()(s, torch.tensor([1, 0, 0, 1, 0])), (s,))


def test_buffers_follow_the_module_and_the_input():
    l = FocalLoss(alpha=[1., 2., 3., 4.])
    assert 'alpha' in l.state_dict()
    assert l.to('meta').alpha.device.type == 'meta'  # registered: moves with .to()
    l2 = LDAMLoss(counts=N, weight=[1., 1., 2., 3.])
    assert l2.double().margins.dtype == torch.float64 and l2.weight.dtype == torch.float64
    assert torch.isfinite(LogitAdjustedLoss(counts=N)(X, Y))  # float32 buffers, float64 input: moved to the input


def test_export_round_trip_and_reduction_none(lt_path, tmp_path):
    from fastai.vision.all import ImageDataLoaders, vision_learner, load_learner
    from conftest import tiny_arch
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)
    for loss in (FocalLoss(alpha=class_weights(dls)), LDAMLoss(dls, s=1.), BalancedSoftmaxLoss(dls), ClassBalancedLoss(dls, gamma=1.)):
        learn = vision_learner(dls, tiny_arch, pretrained=False, loss_func=loss)
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
        p, y, l = learn.get_preds(with_loss=True)
        assert torch.allclose(p.sum(1), torch.ones(len(p)), atol=1e-5)  # the activation is applied: probabilities
        assert l.shape == (len(y),) and loss.reduction == 'mean'  # reduction='none' during get_preds only
        learn.export(tmp_path/'l.pkl')
        l2 = load_learner(tmp_path/'l.pkl')
        img = next((lt_path/'valid'/'3').glob('*.png'))
        assert torch.allclose(l2.predict(img)[2], learn.predict(img)[2], atol=1e-5)


@pytest.mark.parametrize('call,msg', [
    (lambda: FocalLoss(gamma=-1), "gamma must be >= 0, got -1"),
    (lambda: FocalBCELoss(gamma=-.5), "gamma must be >= 0, got -0.5"),
    (lambda: FocalLoss(alpha=[1., -1.]), "alpha must be finite and >= 0"),
    (lambda: FocalLoss(alpha=[1., 2., 3.])(X, Y), "FocalLoss: alpha has 3 entries but the model outputs 4 classes"),
    (lambda: LogitAdjustedLoss(counts=[5, 4, 3])(X, Y), "LogitAdjustedLoss: the class counts has 3 entries but the model outputs 4 classes"),
    (lambda: LogitAdjustedLoss(counts=[5, 0, 3, 1]), "class ['1'] has none"),
    (lambda: LDAMLoss(counts=[5, 2, 0, 0]), "LDAMLoss needs every class to have items; class ['2', '3'] has none"),
    (lambda: ClassBalancedLoss(counts=[0, 2, 3, 1]), "class ['0'] has none"),
    (lambda: FocalLoss()(X, YM), "FocalLoss is single-label: float targets are class probabilities, each row >= 0 and summing to 1 over the classes; row "),
    (lambda: LogitAdjustedLoss(counts=N)(X, YM), "LogitAdjustedLoss is single-label: targets must be class indices shaped (12,), got (12, 4) torch.float64 (a multilabel matrix: use a multilabel loss)"),
    (lambda: FocalLoss()(X, Y[:5]), "FocalLoss is single-label: targets must be class indices shaped (12,) or class probabilities shaped like the outputs (12, 4), got (5,) torch.int64"),
    (lambda: PairwiseAUCLoss()(torch.randn(4), torch.tensor([0, 1, 2, 1])), "PairwiseAUCLoss is binary: targets must be 0/1, got [2]"),
    (lambda: PairwiseAUCLoss()(torch.randn(3), torch.tensor([0., .5, 1.])), "PairwiseAUCLoss is binary: targets must be 0/1, got [0.5]"),
    (lambda: SoftKappaLoss(reduction='none'), "SoftKappaLoss(log=True) has no per-item losses"),
    (lambda: AsymmetricLoss()(X, Y), "AsymmetricLoss is multilabel: targets must be a 0/1 matrix shaped like the outputs (12, 4), got (12,) (class indices: use a single-label loss)"),
    (lambda: PairwiseAUCLoss()(X, Y), "PairwiseAUCLoss is binary: the model outputs 4 classes"),
    (lambda: SoftmaxMultilabelLoss(), "pass data (to take k"),
    (lambda: FocalLoss(reduction='avg'), "unknown reduction 'avg'"),
    (lambda: LogitAdjustedLoss(counts=[1, np.nan]), "counts must be finite and >= 0, found [nan] at positions [1]"),
    (lambda: AsymmetricLoss(clip=1.), "clip must lie in [0, 1), got 1.0"),
    (lambda: FocalLoss(alpha=[1., 2.], weight=[1., 2.]), "pass alpha (the paper's alpha-balanced focal loss) or weight (fastai's FocalLoss), not both"),
    (lambda: LDAMLoss(counts=N)(X * 10, Y), "LDAMLoss(s=30) scales cosine logits in [-1, 1] (Cao et al.'s normalised classifier), but got |logit| up to"),
])
def test_bad_input(call, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): call()


def test_batch_level_losses_give_per_item_shares():
    s, y = torch.randn(9, generator=g), torch.tensor([1, 0, 0, 1, 0, 0, 0, 1, 0])
    for loss, x, t in ((PairwiseAUCLoss(ce_weight=.5), s, y), (SoftKappaLoss(log=False), X, Y)):
        total = loss(x, t)
        loss.reduction = 'none'
        per = loss(x, t)
        assert per.shape == (len(t),) and torch.allclose(per.mean(), total)  # fastai's MixUp and get_preds average per-item losses
        loss.reduction = 'sum'
        assert torch.allclose(loss(x, t), per.sum())


@pytest.mark.parametrize('call,msg', [
    (lambda: FocalLoss(alpha=[1., float('nan'), 2.]), "alpha must be finite and >= 0, found [nan] at positions [1]"),
    (lambda: FocalLoss(alpha=[1., -1.]), "alpha must be finite and >= 0, found [-1.0] at positions [1]"),
    (lambda: FocalLoss(alpha=0.25), "alpha must be 1-d, got shape ()"),  # torchvision's scalar focal alpha: here alpha is per class
    (lambda: LDAMLoss(counts=N, weight=[1., 1., float('inf'), 1.]), "weight must be finite and >= 0, found [inf] at positions [2]"),
])
def test_bad_weights(call, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): call()


def test_focal_loss_takes_fastais_arguments_with_their_meaning():
    import fastai.losses as fl
    w = torch.tensor([1., 2., 3., 4.], dtype=torch.float64)
    for gamma in (0., .5, 2.):
        for red in ('mean', 'sum', 'none'):
            for kw in (dict(), dict(weight=w)):
                assert torch.allclose(FocalLoss(gamma, reduction=red, **kw).double()(X, Y), fl.FocalLoss(gamma, reduction=red, **kw)(X, Y))
    assert torch.allclose(FocalLoss(2., w).double()(X, Y), fl.FocalLoss(2., w)(X, Y))  # positional, as fastai's
    assert FocalLoss().y_int and not AsymmetricLoss().y_int  # fastai's MixUp reads it


def test_reduction_none_keeps_the_weights():
    "get_preds(with_loss=True) and top-loss plots see each item's weighted loss, as PyTorch's CrossEntropyLoss(weight, reduction='none')"
    a = torch.tensor([1., 2., 3., 4.], dtype=torch.float64)
    for loss, ref in ((FocalLoss(0., alpha=a), lambda r: F.cross_entropy(X, Y, weight=a, reduction=r)),
                      (LDAMLoss(counts=N, weight=a, max_m=0., s=1.), lambda r: F.cross_entropy(X, Y, weight=a, reduction=r)),
                      (ClassBalancedLoss(counts=N), lambda r: F.cross_entropy(X, Y, weight=class_weights(counts=N, method='effective').double(), reduction=r if r != 'mean' else 'sum') / (len(Y) if r == 'mean' else 1))):
        loss = loss.double()
        for r in ('none', 'sum', 'mean'):
            loss.reduction = r
            assert torch.allclose(loss(X, Y), ref(r)), (type(loss).__name__, r)
    fa = FocalLoss(2., alpha=a).double()
    mean = fa(X, Y); fa.reduction = 'none'
    assert torch.allclose(fa(X, Y).sum() / a[Y].sum(), mean)  # the items' weighted losses sum to the weighted mean's numerator


@pytest.mark.parametrize('loss,t', [(FocalLoss(.5), 0), (FocalLoss(.3, alpha=[1., 2., 3., 4.]), 0), (FocalLoss(.5, weight=[1., 2., 3., 4.]), 0),
                                    (ClassBalancedLoss(counts=N, gamma=.5), 0), (FocalBCELoss(.5), 1), (FocalBCELoss(.2, alpha=.25), 1),
                                    (AsymmetricLoss(.5, .5, .05), 1), (AsymmetricLoss(.3, .7, 0.), 1)])
def test_finite_gradients_at_confident_logits(loss, t):
    "0 < gamma < 1 at logits 20, 40, 90 (right and wrong): the old (1 - p_t) ** gamma gave NaN there"
    for v in (20., 40., 90., -20., -90.):
        x = torch.full((3, 4), -v / 4); x[:, 0] = v
        x.requires_grad_()
        y = torch.zeros(3, dtype=torch.long) if t == 0 else torch.tensor([[1., 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
        loss(x, y).backward()
        assert torch.isfinite(x.grad).all(), (type(loss).__name__, v, x.grad)


def test_asymmetric_loss_gradient_of_a_missed_positive():
    x = torch.tensor([[-19., 3.]], requires_grad=True)
    AsymmetricLoss(reduction='sum')(x, torch.tensor([[1., 0.]])).backward()
    assert x.grad[0, 0].item() == pytest.approx(-1., abs=1e-6)  # d/dx -log sigmoid(x) = -(1 - p); a clamped log gave 0
    x2 = torch.tensor([[-19.]], requires_grad=True)
    FocalBCELoss(0., reduction='sum')(x2, torch.ones(1, 1)).backward()
    assert x2.grad.item() == pytest.approx(-1., abs=1e-6)


def test_ldam_with_its_cosine_classifier_on_a_learner(lt_path):
    from fastai.vision.all import ImageDataLoaders, vision_learner
    from conftest import tiny_arch
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, loss_func=LDAMLoss(dls))
    with pytest.raises(ValueError, match=re.escape("build the model with cosine_classifier(learn.model)")):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    learn = vision_learner(dls, tiny_arch, pretrained=False, loss_func=LDAMLoss(dls))
    cosine_classifier(learn.model)
    assert isinstance(learn.model[-1][-1], NormedLinear)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    p, _ = learn.get_preds(act=lambda z: z)
    assert p.abs().max() <= 1 + 1e-5 and np.isfinite(learn.recorder.values[-1][0])


def test_class_axis_and_shapes_like_pytorch():
    "(n, C, h, w) outputs with axis=1: each pixel's logits meet its own target (a transpose instead of movedim paired them wrongly); 'none' keeps the targets' shape"
    import fastai.losses as fl
    g_ = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(2, 3, 4, 5, generator=g_), torch.randint(0, 3, (2, 4, 5), generator=g_)
    assert torch.allclose(FocalLoss(0.)(xs, ys), F.cross_entropy(xs, ys))  # FocalLoss: class axis 1 by default, as fastai's
    assert torch.allclose(FocalLoss(2.)(xs, ys), fl.FocalLoss(2.)(xs, ys)) and FocalLoss(2., reduction='none')(xs, ys).shape == (2, 4, 5)
    assert torch.allclose(LogitAdjustedLoss(counts=[1, 1, 1], tau=0., axis=1)(xs, ys), F.cross_entropy(xs, ys))
    assert torch.allclose(ClassBalancedLoss(counts=[1, 1, 1], beta=0., axis=1)(xs, ys), F.cross_entropy(xs, ys))
    assert torch.allclose(LDAMLoss(counts=[1, 1, 1], max_m=0., s=1., axis=1)(xs, ys), F.cross_entropy(xs, ys))
    assert torch.allclose(FocalLoss(2., alpha=[1., 2., 3.])(xs, ys), FocalLoss(2., alpha=[1., 2., 3.], axis=-1)(xs.movedim(1, -1), ys))
    ym = (torch.rand(2, 3, 4, 5, generator=g_) < .3).float()
    assert torch.allclose(FocalBCELoss(0., axis=1)(xs, ym), F.binary_cross_entropy_with_logits(xs, ym))
    with pytest.raises(ValueError, match=re.escape("targets must be class indices shaped (2, 4, 5) or class probabilities shaped like the outputs (2, 3, 4, 5), got (2, 5, 4)")): FocalLoss()(xs, ys.transpose(1, 2))


def test_batch_level_losses_under_mixup():
    "fastai's MixUp computes reduction='none' and averages: the batch-level losses keep their scale"
    from fastai.callback.mixup import MixUp
    from fastai.learner import Learner
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    torch.manual_seed(0)
    xs = torch.randn(64, 2); ys = (xs[:, 0] > 0).long()
    ds = list(zip(xs, ys))
    dls = DataLoaders(DataLoader(ds, bs=32, shuffle=True), DataLoader(ds, bs=32))
    for loss in (PairwiseAUCLoss(ce_weight=.5), SoftKappaLoss(log=False)):
        learn = Learner(dls, torch.nn.Linear(2, 2), loss_func=loss, cbs=MixUp())
        with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=0.)
        plain = loss(learn.model(xs), ys).item()
        ratio = learn.recorder.values[-1][0] / plain  # mixed inputs give another loss, of the same scale: 1/32 would mean per-item values summing, not averaging, to the loss
        assert 1/4 < ratio < 4, (type(loss).__name__, learn.recorder.values[-1][0], plain)
    kappa = SoftKappaLoss()
    learn = Learner(dls, torch.nn.Linear(2, 2), loss_func=kappa, cbs=MixUp())
    with pytest.raises(ValueError, match=re.escape("Use SoftKappaLoss(log=False)")):  # log=True has no per-item losses to mix: said at the first batch
        with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=0.)
    assert kappa.reduction == 'mean'  # fastai's NoneReduce put it back


EDGE = torch.tensor([[64., -64.], [-64., 64.], [64., -64.], [-64., 64.]])  # AUC pair differences of 256: squared, over float16's range
SOFT = torch.softmax(torch.randn(12, 4, generator=g, dtype=torch.float64) * 2, 1)


@pytest.mark.parametrize('loss,x,y', [
    (PairwiseAUCLoss(), EDGE, torch.tensor([1, 0, 0, 1])), (PairwiseAUCLoss(ce_weight=1.), EDGE, torch.tensor([1, 0, 0, 1])),
    (PairwiseAUCLoss(reduction='none'), EDGE, torch.tensor([1, 0, 0, 1])), (PairwiseAUCLoss(), EDGE[:, 1] * 2, torch.tensor([1., 0., 0., 1.])),
    (FocalLoss(2., alpha=[1., 2., 3., 4.]), X * 20, Y), (FocalLoss(.5, weight=[1., 2., 3., 4.]), X * 20, Y), (FocalLoss(2.), X * 20, SOFT),
    (ClassBalancedLoss(counts=N, gamma=1.), X * 20, Y), (LogitAdjustedLoss(counts=N), X * 20, Y), (LDAMLoss(counts=N, s=1.), X * 20, Y),
    (SoftKappaLoss(), X * 20, Y), (SoftKappaLoss(log=False, reduction='none'), X * 20, Y),
    (PosWeightBCELoss(counts=[3, 4, 5, 6], n_items=12), X * 20, YM), (FocalBCELoss(), X * 20, YM), (AsymmetricLoss(1., 4.), X * 20, YM),
    (SoftmaxMultilabelLoss(k=2), X * 20, YM)])
def test_half_precision_matches_float32(loss, x, y):
    "fp16 / bf16 outputs (mixed precision) give the float32 loss of the same values: every loss computes in float32"
    for dt in (torch.float16, torch.bfloat16):
        xh = x.to(dt)
        want = loss(xh.float(), y.float() if y.is_floating_point() else y)
        got = loss(xh, y.to(dt) if y.is_floating_point() and y is not SOFT else y)
        assert got.dtype == torch.float32 and torch.isfinite(got).all(), (type(loss).__name__, dt, got)
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-6) if y is not SOFT else torch.allclose(got, want.float(), rtol=1e-5), (type(loss).__name__, dt, got, want)


def test_pairwise_auc_loss_in_half_precision():
    "Logits of +-64: float16 arithmetic squared 257 into inf, then inf * 0 into NaN"
    y = torch.tensor([1, 0, 0, 1])
    for red in ('mean', 'sum', 'none'):
        want = PairwiseAUCLoss(reduction=red)(EDGE, y)
        for dt in (torch.float16, torch.bfloat16): assert torch.equal(PairwiseAUCLoss(reduction=red)(EDGE.to(dt), y), want), (red, dt)
    assert PairwiseAUCLoss()(EDGE.half(), y).item() == 16512.75


def test_focal_loss_is_a_superset_of_fastais():
    "Every target fastai's FocalLoss takes (class indices, ignore_index -100, unbatched, class probabilities, spatial), fastai's number, for every gamma, weight and reduction"
    import fastai.losses as fl
    w = torch.tensor([1., 2., 3., 4.], dtype=torch.float64)
    xs = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)
    ys, ps = torch.randint(0, 4, (2, 3, 5), generator=g), torch.softmax(torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64), 1)
    yi = Y.clone(); yi[[2, 7]] = -100
    cases = [(X, Y), (X, SOFT), (X, yi), (X, F.one_hot(Y, 4).double() * .9 + .025), (xs, ys), (xs, ps), (X[0], Y[0]), (X[0], SOFT[0])]
    for gamma in (0., .5, 2.):
        for red in ('mean', 'sum', 'none'):
            for kw in (dict(), dict(weight=w)):
                for x, t in cases:
                    got, want = FocalLoss(gamma, reduction=red, **kw).double()(x, t), fl.FocalLoss(gamma, reduction=red, **kw)(x, t)
                    assert got.shape == want.shape and torch.allclose(got, want), (gamma, red, kw, x.shape, t.shape, t.dtype)
    for kw in (dict(alpha=w), dict(weight=w), dict()):  # one-hot probabilities: the class indices' loss, alpha included
        for red in ('mean', 'sum', 'none'):
            assert torch.allclose(FocalLoss(1.5, reduction=red, **kw).double()(X, F.one_hot(Y, 4).double()), FocalLoss(1.5, reduction=red, **kw).double()(X, Y))
    a = FocalLoss(2., alpha=w, reduction='none').double()
    ce = -(SOFT * X.log_softmax(1)).sum(1)
    assert torch.allclose(a(X, SOFT), SOFT @ w * (1 - torch.exp(-ce)) ** 2 * ce)  # alpha on probabilities: sum_c alpha_c y_c
    assert torch.allclose(FocalLoss(2., alpha=w).double()(X, yi), FocalLoss(2., alpha=w).double()(X[yi != -100], Y[yi != -100]))  # ignored items: weight 0
    x = (X * 3).clone().requires_grad_()
    FocalLoss(.5)(x, SOFT).backward()
    assert torch.isfinite(x.grad).all()
    assert torch.autograd.gradcheck(lambda z: FocalLoss(1.5, alpha=w).double()(z, SOFT), ((X * .5).clone().requires_grad_(),), eps=1e-6, atol=1e-5)
    from fastai_imbalance.all import FocalLoss as Starred
    assert Starred is FocalLoss  # what the star import's FocalLoss name gives


@pytest.mark.parametrize('t,msg', [
    (torch.tensor([[1., 0., 1.], [0., 1., 0.]]), "row 0 is [1.0, 0.0, 1.0] (sum 2) (a multilabel matrix: use a multilabel loss)"),
    (torch.tensor([[.5, .5, 0.], [0., 0., 0.]]), "row 1 is [0.0, 0.0, 0.0] (sum 0)"),
    (torch.tensor([[1.2, -.2, 0.], [0., 1., 0.]]), "row 0 is [1.2, -0.2, 0.0] (sum 1)"),
    (torch.tensor([[.3, .3, .3], [0., 1., 0.]]), "row 0 is [0.3, 0.3, 0.3] (sum 0.9)"),
])
def test_focal_soft_targets_must_be_probabilities(t, msg):
    with pytest.raises(ValueError, match=re.escape("FocalLoss is single-label: float targets are class probabilities, each row >= 0 and summing to 1 over the classes; " + msg)):
        FocalLoss()(torch.randn(2, 3), t)


def test_class_balanced_loss_follows_cui_et_al():
    "Cui et al. 2019: w_c = (1-beta)/(1-beta^n_c), normalised to sum to C, loss = (1/N) sum_i w_{y_i} l_i (their reference code's mean over the items)"
    n, beta = np.array(N, dtype=np.float64), .99
    e = (1 - beta) / (1 - beta ** n); e = torch.tensor(e * len(n) / e.sum())
    ce = F.cross_entropy(X, Y, reduction='none')
    loss = ClassBalancedLoss(counts=N, beta=beta).double()
    assert torch.allclose(loss(X, Y), (e[Y] * ce).sum() / len(Y))
    assert not torch.allclose(loss(X, Y), (e[Y] * ce).sum() / e[Y].sum())  # not PyTorch's weighted mean, which FocalLoss(alpha=...) is
    assert torch.allclose(FocalLoss(0., alpha=e)(X, Y), (e[Y] * ce).sum() / e[Y].sum())
    p = X.softmax(1)[torch.arange(12), Y]
    assert torch.allclose(ClassBalancedLoss(counts=N, beta=beta, gamma=2.).double()(X, Y), (e[Y] * (1 - p) ** 2 * ce).sum() / len(Y))
    for red, want in (('sum', (e[Y] * ce).sum()), ('none', e[Y] * ce)):
        assert torch.allclose(ClassBalancedLoss(counts=N, beta=beta, reduction=red).double()(X, Y), want)
    assert torch.allclose(loss(X, SOFT), (SOFT @ e * -(SOFT * X.log_softmax(1)).sum(1)).mean())  # class probabilities: weight sum_c w_c y_c
    yi = Y.clone(); yi[[0, 5]] = -100
    keep = yi != -100
    assert torch.allclose(loss(X, yi), (e[Y] * ce)[keep].sum() / keep.sum())  # ignored items are not counted in N
    # a mixed batch: one item of each class; the paper's mean and the weighted mean differ by the batch's mean weight
    xb, yb = X[:4], torch.tensor([0, 1, 2, 3])
    assert torch.allclose(loss(xb, yb) / FocalLoss(0., alpha=e)(xb, yb), e.mean())


def test_soft_kappa_per_item_values():
    "log=False: item i's value N*o_i/E, o_i its expected weighted disagreement, E the chance disagreement; mean and sum are the loss; log=True refuses 'none'"
    C = 4
    P = X.softmax(1)
    W = (torch.arange(C)[:, None] - torch.arange(C)).double() ** 2
    o = (W[Y] * P).sum(1)
    E = (W * torch.outer(F.one_hot(Y, C).double().sum(0), P.sum(0))).sum() / len(Y)
    per = SoftKappaLoss(log=False, reduction='none')(X, Y)
    assert torch.allclose(per, (len(Y) * o + 1e-7) / (E + 1e-7))
    assert torch.allclose(per.mean(), SoftKappaLoss(log=False)(X, Y)) and torch.allclose(per.sum(), SoftKappaLoss(log=False, reduction='sum')(X, Y))
    assert per.std() > 0 and per.argmax() == o.argmax()
    for w in (None, 'linear'):
        assert torch.allclose(SoftKappaLoss(w, log=False, reduction='none')(X, Y).mean(), SoftKappaLoss(w, log=False)(X, Y))
    loss = SoftKappaLoss()
    loss.reduction = 'none'  # as fastai's get_preds(with_loss=True) and MixUp set it
    with pytest.raises(ValueError, match=re.escape("SoftKappaLoss(log=True) has no per-item losses: the log of the batch's observed-to-chance disagreement ratio does not split into items")):
        loss(X, Y)


def _tiny_classification_learner(loss, n_classes):
    "A linear model on 2-d points through fastai's `Datasets` + `Categorize` (so the loaders have a vocab, as ClassificationInterpretation needs)"
    from fastai.data.core import Datasets
    from fastai.data.transforms import Categorize
    from fastai.learner import Learner
    torch.manual_seed(0)
    xs = torch.randn(48, 2)
    ys = (xs[:, 0] * n_classes / 3 + n_classes / 2).clamp(0, n_classes - 1).long()
    ys[:3] = torch.tensor([n_classes - 1, 0, n_classes - 1])  # three items far from their class
    xs[:3] = torch.tensor([[-3., 0.], [3., 0.], [-2.5, 0.]])
    dsets = Datasets(list(range(48)), [[lambda i: xs[i]], [lambda i: int(ys[i]), Categorize(vocab=list(range(n_classes)))]], splits=[list(range(48)), list(range(48))])
    learn = Learner(dsets.dataloaders(bs=16, num_workers=0), torch.nn.Linear(2, n_classes), loss_func=loss)
    with torch.no_grad():  # a model that ranks by x[:, 0]: the three planted items are its worst
        learn.model.weight.zero_(); learn.model.weight[:, 0] = torch.linspace(-3, 3, n_classes); learn.model.bias.zero_()
        if n_classes == 2: learn.model.weight[:, 0] = torch.tensor([-1.5, 1.5])
    return learn


def test_interpretation_with_batch_level_losses():
    "ClassificationInterpretation.top_losses ranks the items of SoftKappaLoss(log=False) and PairwiseAUCLoss; SoftKappaLoss(log=True) says why it cannot and what to use"
    from fastai.interpret import ClassificationInterpretation
    for loss, k in ((SoftKappaLoss(log=False), 4), (PairwiseAUCLoss(), 2)):
        learn = _tiny_classification_learner(loss, k)
        with learn.no_bar(): interp = ClassificationInterpretation.from_learner(learn)
        losses, idx = interp.top_losses(3)
        assert sorted(idx.tolist()) == [0, 1, 2], (type(loss).__name__, idx, interp.losses[:5])  # the planted items first
        assert len(interp.losses) == 48 and interp.losses.std() > 0 and loss.reduction == 'mean'
    learn = _tiny_classification_learner(SoftKappaLoss(), 4)
    with pytest.raises(ValueError, match=re.escape("Use SoftKappaLoss(log=False), whose per-item values are each item's share of the ratio (for interpretation, set learn.loss_func = SoftKappaLoss(log=False) first)")):
        with learn.no_bar(): ClassificationInterpretation.from_learner(learn)
    assert learn.loss_func.reduction == 'mean'
    learn.loss_func = SoftKappaLoss(log=False)  # the message's advice
    with learn.no_bar(): assert sorted(ClassificationInterpretation.from_learner(learn).top_losses(3)[1].tolist()) == [0, 1, 2]


@pytest.mark.parametrize('loss', [FocalLoss(2.), FocalLoss(1., alpha=[1., 2., 3., 4.]), ClassBalancedLoss(counts=N), LogitAdjustedLoss(counts=N),
                                  BalancedSoftmaxLoss(counts=N), LDAMLoss(counts=N, s=1.), SoftKappaLoss(), SoftKappaLoss(log=False, reduction='none')],
                         ids=lambda l: type(l).__name__)
def test_tabular_targets_one_column_of_class_codes(loss):
    "fastai's tabular loaders give `(bs, 1)` class codes (int8 for few classes): the same loss as `(bs,)` targets, as fastai's CrossEntropyLossFlat"
    y1 = Y[:, None].to(torch.int8)
    assert y1.shape == (12, 1)
    torch.testing.assert_close(loss(X, y1), loss(X, Y))
    with pytest.raises(ValueError, match=r"got \(12, 2\)"): loss(X, Y[:, None].expand(12, 2))  # two columns are no class-index column


def test_pairwise_auc_loss_takes_tabular_targets():
    y = torch.tensor([0, 1, 0, 0, 1, 0])
    x = torch.randn(6, 2, generator=g)
    torch.testing.assert_close(PairwiseAUCLoss()(x, y[:, None]), PairwiseAUCLoss()(x, y))
