//! Myers' O(ND) line diff in linear space (divide and conquer on the middle snake), on interned
//! line ids. Only [`super::diff`] uses it, on the caller's own trees; the search depth is capped
//! so a huge difference costs bounded time (past the cap it falls back to "replace the rest",
//! which is still a correct, if larger, diff).

/// One step of an edit script, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// Old line `.0` equals new line `.1`.
    Equal(usize, usize),
    /// Old line `.0` is removed.
    Delete(usize),
    /// New line `.0` is inserted.
    Insert(usize),
}

/// An edit script turning `a` into `b`. `max_d` caps the edit distance searched for (per middle
/// snake); beyond it the remaining ranges are replaced wholesale.
pub(super) fn diff(a: &[u32], b: &[u32], max_d: usize) -> Vec<Op> {
    let mut ops = Vec::with_capacity(a.len().max(b.len()));
    let size = 2 * (a.len() + b.len()).min(2 * max_d + 2) + 4;
    let mut vf = vec![0usize; size];
    let mut vb = vec![0usize; size];
    let mut m = Myers {
        a,
        b,
        vf: &mut vf,
        vb: &mut vb,
        max_d,
        ops: &mut ops,
    };
    m.conquer(0, a.len(), 0, b.len());
    ops
}

struct Myers<'a> {
    a: &'a [u32],
    b: &'a [u32],
    vf: &'a mut [usize],
    vb: &'a mut [usize],
    max_d: usize,
    ops: &'a mut Vec<Op>,
}

impl Myers<'_> {
    fn conquer(&mut self, mut a0: usize, mut a1: usize, mut b0: usize, mut b1: usize) {
        while a0 < a1 && b0 < b1 && self.a[a0] == self.b[b0] {
            self.ops.push(Op::Equal(a0, b0));
            a0 += 1;
            b0 += 1;
        }
        let mut suffix = 0;
        while a1 > a0 && b1 > b0 && self.a[a1 - 1] == self.b[b1 - 1] {
            a1 -= 1;
            b1 -= 1;
            suffix += 1;
        }
        if a0 == a1 {
            self.ops.extend((b0..b1).map(Op::Insert));
        } else if b0 == b1 {
            self.ops.extend((a0..a1).map(Op::Delete));
        } else if let Some((x, y)) = self.middle_snake(a0, a1, b0, b1) {
            self.conquer(a0, x, b0, y);
            self.conquer(x, a1, y, b1);
        } else {
            self.ops.extend((a0..a1).map(Op::Delete));
            self.ops.extend((b0..b1).map(Op::Insert));
        }
        self.ops
            .extend((0..suffix).map(|i| Op::Equal(a1 + i, b1 + i)));
    }

    /// A point (x, y) on an optimal path strictly inside the box, so both halves are smaller; or
    /// `None` past the depth cap. Needs non-empty ranges without a common prefix or suffix.
    fn middle_snake(
        &mut self,
        a0: usize,
        a1: usize,
        b0: usize,
        b1: usize,
    ) -> Option<(usize, usize)> {
        let n = (a1 - a0) as isize;
        let m = (b1 - b0) as isize;
        let delta = n - m;
        let odd = delta & 1 == 1;
        // The middle snake of a script of D edits lies at depth ceil(D / 2) from either end.
        let d_max = ((n + m + 1) / 2 + 1).min(self.max_d as isize / 2 + 2);
        let off = (self.vf.len() / 2) as isize;
        if d_max + 1 >= off {
            return None;
        }
        let idx = |k: isize| (k + off) as usize;
        self.vf[idx(1)] = 0;
        self.vb[idx(1)] = 0;
        for d in 0..d_max {
            let mut k = -d;
            while k <= d {
                let mut x = if k == -d || (k != d && self.vf[idx(k - 1)] < self.vf[idx(k + 1)]) {
                    self.vf[idx(k + 1)]
                } else {
                    self.vf[idx(k - 1)] + 1
                } as isize;
                let mut y = x - k;
                let (x0, y0) = (x, y);
                while x < n && y < m && self.a[a0 + x as usize] == self.b[b0 + y as usize] {
                    x += 1;
                    y += 1;
                }
                self.vf[idx(k)] = x as usize;
                if odd && (k - delta).abs() < d && x + self.vb[idx(-(k - delta))] as isize >= n {
                    return Some((a0 + x0 as usize, b0 + y0 as usize));
                }
                k += 2;
            }
            let mut k = -d;
            while k <= d {
                let mut x = if k == -d || (k != d && self.vb[idx(k - 1)] < self.vb[idx(k + 1)]) {
                    self.vb[idx(k + 1)]
                } else {
                    self.vb[idx(k - 1)] + 1
                } as isize;
                let mut y = x - k;
                while x < n
                    && y < m
                    && self.a[a0 + (n - x - 1) as usize] == self.b[b0 + (m - y - 1) as usize]
                {
                    x += 1;
                    y += 1;
                }
                self.vb[idx(k)] = x as usize;
                if !odd && (k - delta).abs() <= d && x + self.vf[idx(-(k - delta))] as isize >= n {
                    return Some((a0 + (n - x) as usize, b0 + (m - y) as usize));
                }
                k += 2;
            }
        }
        None
    }
}
