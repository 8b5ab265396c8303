"""The NumPy-book baseline: whole-batch im2col/col2im in NumPy, as the seed notebooks do.

Written from the definitions (the layout of "Deep Learning from Scratch", ch. 7): one im2col
of the whole batch into a (N*OH*OW, C*FH*FW) matrix, one matmul, and col2im by adding the
kernel offsets back with strided slices. This is what fastcnn exists to beat.
"""

import numpy as np


def im2col(x, fh, fw, stride=1, pad=0):
    n, c, h, w = x.shape
    oh, ow = (h + 2 * pad - fh) // stride + 1, (w + 2 * pad - fw) // stride + 1
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    col = np.zeros((n, c, fh, fw, oh, ow), dtype=x.dtype)
    for y in range(fh):
        y_max = y + stride * oh
        for xx in range(fw):
            x_max = xx + stride * ow
            col[:, :, y, xx, :, :] = img[:, :, y:y_max:stride, xx:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, -1)


def col2im(col, input_shape, fh, fw, stride=1, pad=0):
    n, c, h, w = input_shape
    oh, ow = (h + 2 * pad - fh) // stride + 1, (w + 2 * pad - fw) // stride + 1
    col = col.reshape(n, oh, ow, c, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(fh):
        y_max = y + stride * oh
        for xx in range(fw):
            x_max = xx + stride * ow
            img[:, :, y:y_max:stride, xx:x_max:stride] += col[:, :, y, xx, :, :]
    return img[:, :, pad : h + pad, pad : w + pad]


class Convolution:
    def __init__(self, weight, bias, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = weight, bias, stride, pad

    def forward(self, x):
        k, c, fh, fw = self.W.shape
        n, _, h, w = x.shape
        oh = (h + 2 * self.pad - fh) // self.stride + 1
        ow = (w + 2 * self.pad - fw) // self.stride + 1
        self.x, self.col = x, im2col(x, fh, fw, self.stride, self.pad)
        self.col_w = self.W.reshape(k, -1).T
        out = self.col @ self.col_w + self.b
        return out.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)

    def backward(self, dout, need_dx=True):
        k, c, fh, fw = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, k)
        self.db = dout.sum(axis=0)
        self.dW = (self.col.T @ dout).transpose(1, 0).reshape(k, c, fh, fw)
        if not need_dx:
            return None
        dcol = dout @ self.col_w.T
        return col2im(dcol, self.x.shape, fh, fw, self.stride, self.pad)


class Pooling:
    def __init__(self, size=2, stride=2):
        self.size, self.stride = size, stride

    def forward(self, x):
        n, c, h, w = x.shape
        oh, ow = (h - self.size) // self.stride + 1, (w - self.size) // self.stride + 1
        col = im2col(x, self.size, self.size, self.stride).reshape(-1, self.size**2)
        self.x, self.arg_max = x, np.argmax(col, axis=1)
        return col.max(axis=1).reshape(n, oh, ow, c).transpose(0, 3, 1, 2)

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        pool = self.size**2
        dmax = np.zeros((dout.size, pool), dtype=dout.dtype)
        dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = dout.flatten()
        dcol = dmax.reshape(dout.shape[0] * dout.shape[1] * dout.shape[2], -1)
        return col2im(dcol, self.x.shape, self.size, self.size, self.stride)
