"""What the factorize tests share: model state snapshots and accuracy on a loader."""

import torch


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(model, snapshot):
    now = model.state_dict()
    return now.keys() == snapshot.keys() and all(torch.equal(now[k], snapshot[k]) for k in snapshot)


@torch.no_grad()
def accuracy(model, loader):
    model.eval()
    right = total = 0
    for x, y in loader:
        right += int((model(x).argmax(1) == y).sum())
        total += y.numel()
    return right / total
