"The prior a model was trained under (`learn.trained_prior`): one notion, recorded by every way of training, kept by export, read by PriorShift and estimate_priors."
import numpy as np, pytest, torch
from torch import nn
from fastai.vision.all import (ImageDataLoaders, vision_learner, Learner, CrossEntropyLossFlat, BCEWithLogitsLossFlat, WeightedDL, DataLoaders,
                               parent_label, load_learner, set_seed)
from fastai_imbalance.core import class_counts
from fastai_imbalance.data import ResampledDL
from fastai_imbalance.training import training_prior, output_kind, TrainedPrior
from fastai_imbalance.finetune import BalancedFinetune
from fastai_imbalance.priorshift import PriorShift
from fastai_imbalance.losses import LogitAdjustedLoss, BalancedSoftmaxLoss, FocalLoss, AsymmetricLoss, PosWeightBCELoss
from conftest import tiny_arch

U = torch.full((10,), .1, dtype=torch.float64)


@pytest.fixture
def dls(lt_path): return ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)


def fit(learn, n=1, **kw):
    with learn.no_bar(), learn.no_logging(): learn.fit(n, **kw)
    return learn.trained_prior


def counts(dls): return torch.tensor(class_counts(dls).values, dtype=torch.float64)


def test_each_way_of_training_records_its_prior(dls):
    n = counts(dls); f = n / n.sum()
    assert not torch.allclose(f, U)  # the set is long-tailed: a wrong prior would show
    tp = fit(vision_learner(dls, tiny_arch, pretrained=False))
    assert isinstance(tp, TrainedPrior) and tp.kind == 'softmax' and torch.allclose(tp.priors, f) and tp.how == 'the training labels'
    torch.testing.assert_close(fit(vision_learner(dls.resampled('balanced'), tiny_arch, pretrained=False)).priors, U)
    rs = dls.resampled('sqrt')
    e = torch.as_tensor(rs.train.expected_counts(), dtype=torch.float64)
    torch.testing.assert_close(fit(vision_learner(rs, tiny_arch, pretrained=False)).priors, e / e.sum())
    # the BalancedFinetune stage's balanced draws, though the natural loader is back after the fit
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=BalancedFinetune(epochs=1))
    tp = fit(learn, 2)
    assert learn.dls.train is dls.train and 'ResampledDL' in tp.how
    torch.testing.assert_close(tp.priors, U)
    # losses: logit adjustment and balanced softmax calibrate to uniform, a class-weighted loss to counts x weights
    for loss in (LogitAdjustedLoss(dls), BalancedSoftmaxLoss(dls)):
        tp = fit(vision_learner(dls, tiny_arch, pretrained=False, loss_func=loss))
        torch.testing.assert_close(tp.priors, U); assert type(loss).__name__ in tp.how
    w = torch.rand(10) + .5
    tp = fit(vision_learner(dls, tiny_arch, pretrained=False, loss_func=CrossEntropyLossFlat(weight=w)))
    torch.testing.assert_close(tp.priors, n * w.double() / (n * w.double()).sum()); assert 'class weights' in tp.how
    tp = fit(vision_learner(dls, tiny_arch, pretrained=False, loss_func=FocalLoss(weight=w)))
    torch.testing.assert_close(tp.priors, n * w.double() / (n * w.double()).sum())
    # fastai's WeightedDL: its item weights' class frequencies
    y = np.array([dls.vocab.o2i[parent_label(o)] for o in dls.train.items])
    wg = np.where(y == 0, 1., 3.)
    wdls = DataLoaders(dls.train.new(cls=WeightedDL, wgts=wg), dls.valid)
    tp = fit(vision_learner(wdls, tiny_arch, pretrained=False))
    torch.testing.assert_close(tp.priors, torch.as_tensor(np.bincount(y, weights=wg) / wg.sum())); assert 'WeightedDL' in tp.how


def test_uniform_shift_after_a_balanced_fit_is_the_identity(dls):
    "The double correction of the issue: cRT then PriorShift('uniform') must not correct the re-balanced classifier again"
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=BalancedFinetune(epochs=1))
    fit(learn, 2)
    with learn.no_bar(): p0, _ = learn.get_preds()
    learn.add_cb(PriorShift('uniform'))
    with learn.no_bar(): p1, _ = learn.get_preds()
    torch.testing.assert_close(p0, p1)
    # a natural fit after it: the prior is the training counts again, and the shift acts
    learn.remove_cbs([c for c in learn.cbs if isinstance(c, PriorShift)]); learn.cbs = learn.cbs.filter(lambda c: not isinstance(c, BalancedFinetune))
    fit(learn, 1)
    torch.testing.assert_close(learn.trained_prior.priors, counts(dls) / counts(dls).sum())


def test_lr_find_does_not_change_the_recorded_prior(dls):
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=BalancedFinetune(epochs=1))
    fit(learn, 2)
    with learn.no_bar(), learn.no_logging(): learn.lr_find(num_it=5, show_plot=False)
    torch.testing.assert_close(learn.trained_prior.priors, U)  # lr_find puts the cRT weights back; their prior stays
    assert learn.dls.train is dls.train


def test_export_keeps_the_prior_and_prediction_uses_it(dls, tmp_path):
    learn = vision_learner(dls.resampled('balanced'), tiny_arch, pretrained=False)
    fit(learn)
    learn.export(tmp_path/'m.pkl')
    l2 = load_learner(tmp_path/'m.pkl')
    torch.testing.assert_close(l2.trained_prior.priors, U)
    l2.add_cb(PriorShift([.5] + [.5 / 9] * 9))  # no training data after load_learner: the recorded prior is the source
    img = dls.valid.items[0]
    p = l2.predict(img)[2].double()
    l3 = load_learner(tmp_path/'m.pkl')
    q = l3.predict(img)[2].double() * torch.tensor([.5] + [.5 / 9] * 9, dtype=torch.float64) / U
    torch.testing.assert_close(p, q / q.sum(), atol=1e-5, rtol=1e-4)


def test_estimate_priors_uncalibrated_uses_the_trained_prior(dls):
    learn = vision_learner(dls.resampled('balanced'), tiny_arch, pretrained=False)
    fit(learn)
    with learn.no_bar(): learn.estimate_priors(dls.test_dl(dls.valid.items[:40]), calibrate=None)
    torch.testing.assert_close(learn.prior_estimate['source'], U)  # not the raw training counts


def test_output_kind_from_the_loss():
    assert output_kind(CrossEntropyLossFlat()) == 'softmax' and output_kind(nn.CrossEntropyLoss()) == 'softmax'
    assert output_kind(BCEWithLogitsLossFlat()) == 'sigmoid' and output_kind(AsymmetricLoss()) == 'sigmoid'
    assert output_kind(PosWeightBCELoss()) == 'sigmoid' and output_kind(FocalLoss()) == 'softmax'
    assert output_kind(nn.MSELoss()) is None


def test_not_a_classifier_records_nothing_and_priorshift_says_so(dls):
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), loss_func=lambda x, y: x.mean() * 0 + nn.functional.cross_entropy(x, y))
    assert fit(learn) is None
    learn.add_cb(PriorShift('uniform'))
    with pytest.raises(ValueError, match='cannot tell which prior the model was trained under'), learn.no_bar(): learn.get_preds()


# --- review findings: a fit that trained nothing records nothing; PriorShift follows every new record ---

def test_a_fit_that_trained_nothing_keeps_the_prior(dls):
    from fastai.vision.all import Callback, CancelFitException
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    tp = fit(learn)
    learn.dls = dls.resampled('balanced')
    class Cancel(Callback):
        def before_fit(self): raise CancelFitException()
    class Fail(Callback):
        def before_batch(self): raise RuntimeError('first batch')
    with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=Cancel())
    assert learn.trained_prior is tp  # cancelled before any step: the weights are still the natural fit's
    with pytest.raises(RuntimeError, match='first batch'), learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=Fail())
    assert learn.trained_prior is tp


def test_priorshift_follows_a_fit_ended_by_keyboard_interrupt(dls):
    from fastai.vision.all import Callback
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    fit(learn)
    ps = PriorShift('uniform'); learn.add_cb(ps)
    learn.dls = dls.resampled('balanced')
    class KI(Callback):
        def after_batch(self):
            if self.epoch == 1: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt), learn.no_bar(), learn.no_logging(): learn.fit(2, cbs=KI())  # fastai sends no after_fit
    torch.testing.assert_close(learn.trained_prior.priors, U)
    with learn.no_bar(): p1, _ = learn.get_preds(dl=dls.valid)
    learn.remove_cb(ps)
    with learn.no_bar(): p0, _ = learn.get_preds(dl=dls.valid)
    torch.testing.assert_close(p0, p1)  # the shift from the new record (uniform) to uniform: nothing, not the stale natural prior's


def test_how_names_the_last_epochs_draw(dls):
    from fastai_imbalance.finetune import ProgressiveBalancing
    tp = fit(vision_learner(dls, tiny_arch, pretrained=False), 3, cbs=ProgressiveBalancing())
    assert 'alpha=0' in tp.how and 'strategy=1' not in tp.how
    torch.testing.assert_close(tp.priors, U)
    tp = fit(vision_learner(dls.resampled('sqrt'), tiny_arch, pretrained=False))
    assert "alpha=0.5, strategy='sqrt'" in tp.how
