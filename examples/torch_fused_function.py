"""Style 5 — a fused RNN kernel as a torch ``autograd.Function`` with a hand-written backward.

The Function runs the whole recurrence in one call and saves only what its
backward needs; the backward walks the sequence in reverse. Parameters follow
torch.nn.RNN: ``weight_ih`` (H, I), ``weight_hh`` (H, H) and two hidden biases
``bias_ih``, ``bias_hh``; x is batch-first (B, T, I). The regression head and
the loss are ordinary torch code; torch differentiates them and calls the
Function's backward, which is what bptt-check verifies.

    bptt-check examples/torch_fused_function.py:backward
"""

import torch


class FusedRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh):
        h, states = h0, []
        for t in range(x.shape[1]):
            h = torch.tanh(x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
            states.append(h)
        out = torch.stack(states, dim=1)                       # (B, T, H)
        ctx.save_for_backward(x, h0, w_ih, w_hh, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, h0, w_ih, w_hh, out = ctx.saved_tensors
        dx, dw_ih, dw_hh = torch.zeros_like(x), torch.zeros_like(w_ih), torch.zeros_like(w_hh)
        db = torch.zeros_like(w_hh[0])
        dh = torch.zeros_like(h0)
        for t in reversed(range(x.shape[1])):
            h_prev = out[:, t - 1] if t > 0 else h0
            da = (grad_out[:, t] + dh) * (1 - out[:, t] ** 2)    # through tanh
            dx[:, t] = da @ w_ih
            dw_ih += da.T @ x[:, t]
            dw_hh += da.T @ h_prev
            db += da.sum(dim=0)
            dh = da @ w_hh
        return dx, dh, dw_ih, dw_hh, db, db.clone()             # both biases get the same gradient


def regression_loss(params, x, y):
    hs = FusedRNN.apply(x, params["h0"], params["weight_ih"], params["weight_hh"],
                        params["bias_ih"], params["bias_hh"])
    pred = hs @ params["head_weight"].T + params["head_bias"]
    return 0.5 * ((pred - y) ** 2).sum()


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt_torch(
    regression_loss,
    bptt_check.Layout(names={"W": "weight_ih", "U": "weight_hh", "b": ("bias_ih", "bias_hh"),
                             "V": "head_weight", "c": "head_bias"},
                      batch="batch_major"))
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
