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
    assert torch.allclose(ClassBalancedLoss(counts=N, beta=.99).double()(X, Y), F.cross_entropy(X, Y, weight=w))
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
    (lambda: FocalLoss()(X, YM), "FocalLoss is single-label: targets must be class indices shaped (12,), got (12, 4) torch.float64 (a multilabel matrix: use a multilabel loss)"),
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
    for loss, x, t in ((PairwiseAUCLoss(ce_weight=.5), s, y), (SoftKappaLoss(), X, Y)):
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
                      (ClassBalancedLoss(counts=N), lambda r: F.cross_entropy(X, Y, weight=class_weights(counts=N, method='effective').double(), reduction=r))):
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
    with pytest.raises(ValueError, match=re.escape("targets must be class indices shaped (2, 4, 5), got (2, 5, 4)")): FocalLoss()(xs, ys.transpose(1, 2))


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
    for loss in (PairwiseAUCLoss(ce_weight=.5), SoftKappaLoss()):
        learn = Learner(dls, torch.nn.Linear(2, 2), loss_func=loss, cbs=MixUp())
        with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=0.)
        plain = loss(learn.model(xs), ys).item()
        ratio = learn.recorder.values[-1][0] / plain  # mixed inputs give another loss, of the same scale: 1/32 would mean per-item values summing, not averaging, to the loss
        assert 1/4 < ratio < 4, (type(loss).__name__, learn.recorder.values[-1][0], plain)
