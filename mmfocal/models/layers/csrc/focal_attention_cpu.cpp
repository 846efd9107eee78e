// mmfocal's own CPU kernels for the focal attention (both passes), built on first use by
// mmfocal/models/layers/compiled_kernels.py and chosen by attention_kernels.attend.
//
// softmax(q k^T + bias + off_map) v for one (image, window, head) per task, its scores kept in
// registers while they are made. Why: the attention's products have an inner dimension of 32 (head
// dims), and through the BLAS on small per-window matrices (PyTorch's flash kernel, bmm) they ran at
// about half the FLOP rate of the linear layers (docs/speed.md). Keys-major: S^T[j][a] for key j and
// query a, so that the softmax over the keys is a vertical max and sum over rows of 8-query vectors
// and every product is register-blocked FMAs (two keys or two channels times the 56 padded queries:
// 14 of the 16 AVX2 registers). Each task first gathers its head's keys and values into one buffer
// (the products then read it in order). The backward recomputes the probabilities from the saved
// log-sum-exp, as the PyTorch kernels' does, and adds the key and value gradients of a chunk of
// windows into the key source with the threads split by columns, so two windows that read one key
// never race. Head dims 32, at most 56 queries (window 7), float32, a shared (heads, keys, 56) bias
// transposed from (heads, w*w, keys); x86-64 with AVX2 and FMA.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace {

constexpr int kDims = 32;         // head dims
constexpr int kQueries = 56;      // queries padded to 7 vectors of 8
constexpr int kVectors = kQueries / 8;

// acc[r][v] = sum_c rows[r][c] * t[c][8v..8v+7] for R rows (keys) at once; t is (kDims, kQueries).
template <int R>
inline void rows_times_transposed(const float *const *rows, const float *t, __m256 acc[R][kVectors]) {
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int c = 0; c < kDims; ++c) {
    __m256 b[R];
    for (int r = 0; r < R; ++r) b[r] = _mm256_set1_ps(rows[r][c]);
    const float *tc = t + c * kQueries;
    for (int v = 0; v < kVectors; ++v) {
      const __m256 x = _mm256_load_ps(tc + 8 * v);
      for (int r = 0; r < R; ++r) acc[r][v] = _mm256_fmadd_ps(b[r], x, acc[r][v]);
    }
  }
}

// Scores of keys j..j+R-1 plus bias and off-map logit, stored as rows of s; returns nothing, folds
// each row into the running maxima.
template <int R>
inline void score_rows(const float *const *rows, const float *qt, const float *bias_rows, const float *off,
                       float *s, __m256 *peak) {
  __m256 acc[R][kVectors];
  rows_times_transposed<R>(rows, qt, acc);
  for (int r = 0; r < R; ++r) {
    const __m256 o = _mm256_set1_ps(off[r]);
    for (int v = 0; v < kVectors; ++v) {
      const __m256 x = _mm256_add_ps(acc[r][v], _mm256_add_ps(_mm256_loadu_ps(bias_rows + r * kQueries + 8 * v), o));
      _mm256_storeu_ps(s + r * kQueries + 8 * v, x);
      peak[v] = _mm256_max_ps(peak[v], x);
    }
  }
}

// out_t[c][a] = sum_j rows[j][offset + c] * z[j][a] for all kDims channels, two at a time; z is
// (keys, kQueries) keys-major, out_t (kDims, kQueries).
inline void transposed_rows_times(const float *const *rows, int64_t offset, int64_t keys, const float *z,
                                  float *out_t) {
  for (int c = 0; c < kDims; c += 2) {
    __m256 a0[kVectors], a1[kVectors];
    for (int v = 0; v < kVectors; ++v) a0[v] = a1[v] = _mm256_setzero_ps();
    for (int64_t j = 0; j < keys; ++j) {
      const float *x = rows[j] + offset;
      const __m256 b0 = _mm256_set1_ps(x[c]), b1 = _mm256_set1_ps(x[c + 1]);
      const float *zj = z + j * kQueries;
      for (int v = 0; v < kVectors; ++v) {
        const __m256 zv = _mm256_loadu_ps(zj + 8 * v);
        a0[v] = _mm256_fmadd_ps(b0, zv, a0[v]);
        a1[v] = _mm256_fmadd_ps(b1, zv, a1[v]);
      }
    }
    for (int v = 0; v < kVectors; ++v) {
      _mm256_store_ps(out_t + c * kQueries + 8 * v, a0[v]);
      _mm256_store_ps(out_t + (c + 1) * kQueries + 8 * v, a1[v]);
    }
  }
}

void forward(const at::Tensor &q, const at::Tensor &source, const at::Tensor &index, const at::Tensor &bias_t,
             const at::Tensor &off_map, at::Tensor &out, at::Tensor &lse) {
  const int64_t batch = source.size(0), sources = source.size(1), heads = source.size(3);
  const int64_t windows = off_map.size(0), keys = off_map.size(1), area = q.size(1);
  const float *q_ptr = q.data_ptr<float>(), *src = source.data_ptr<float>(), *bt = bias_t.data_ptr<float>();
  const float *off = off_map.data_ptr<float>();
  const int64_t *idx = index.data_ptr<int64_t>();
  float *out_ptr = out.data_ptr<float>(), *lse_ptr = lse.data_ptr<float>();
  const int64_t ld = heads * kDims, row = 2 * ld;
  at::parallel_for(0, batch * windows * heads, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float qt[kDims * kQueries];
    alignas(64) float ot[kDims * kQueries];
    std::vector<float> probs(keys * kQueries), gathered(keys * 2 * kDims);
    std::vector<const float *> key_rows(keys);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t h = task % heads, bn = task / heads, n = bn % windows, b = bn / windows;
      const float *qw = q_ptr + bn * area * ld + h * kDims;
      for (int c = 0; c < kDims; ++c)
        for (int a = 0; a < kQueries; ++a) qt[c * kQueries + a] = a < area ? qw[a * ld + c] : 0.f;
      // The window's keys and values of this head, gathered into one buffer first (rows of
      // kDims keys then kDims values): the products then read it in order, where rows of the
      // source scattered over the map would stall them on each key's first load.
      const float *base = src + b * sources * row + h * kDims;
      for (int64_t j = 0; j < keys; ++j) {
        const float *from = base + idx[n * keys + j] * row;
        float *to = gathered.data() + j * 2 * kDims;
        std::memcpy(to, from, kDims * sizeof(float));
        std::memcpy(to + kDims, from + ld, kDims * sizeof(float));
        key_rows[j] = to;
      }
      const float *bias_rows = bt + h * keys * kQueries, *om = off + n * keys;
      float *s = probs.data();

      __m256 peak[kVectors];
      for (int v = 0; v < kVectors; ++v) peak[v] = _mm256_set1_ps(-INFINITY);
      int64_t j = 0;
      for (; j + 2 <= keys; j += 2)
        score_rows<2>(&key_rows[j], qt, bias_rows + j * kQueries, om + j, s + j * kQueries, peak);
      if (j < keys) score_rows<1>(&key_rows[j], qt, bias_rows + j * kQueries, om + j, s + j * kQueries, peak);

      __m256 sum[kVectors];
      for (int v = 0; v < kVectors; ++v) sum[v] = _mm256_setzero_ps();
      for (j = 0; j < keys; ++j)
        for (int v = 0; v < kVectors; ++v) {
          float *p = s + j * kQueries + 8 * v;
          const __m256 e = at::vec::Vectorized<float>(_mm256_sub_ps(_mm256_loadu_ps(p), peak[v])).exp_u20();
          _mm256_storeu_ps(p, e);
          sum[v] = _mm256_add_ps(sum[v], e);
        }

      // O^T[c][a] = sum_j V[j][c] P^T[j][a], normalised by the sums as it is written out.
      transposed_rows_times(key_rows.data(), kDims, keys, s, ot);
      alignas(64) float peaks[kQueries], sums[kQueries];
      for (int v = 0; v < kVectors; ++v) {
        _mm256_store_ps(peaks + 8 * v, peak[v]);
        _mm256_store_ps(sums + 8 * v, sum[v]);
      }
      float *ow = out_ptr + bn * area * ld + h * kDims;
      for (int64_t a = 0; a < area; ++a) {
        const float inv = 1.f / sums[a];
        for (int c = 0; c < kDims; ++c) ow[a * ld + c] = ot[c * kQueries + a] * inv;
      }
      float *lse_row = lse_ptr + (bn * heads + h) * area;
      for (int64_t a = 0; a < area; ++a) lse_row[a] = peaks[a] + std::log(sums[a]);
    }
  });
}

// acc[r][w] = sum_{a < area} z[r][a] * y[a][8w..8w+7] for R rows of z (keys, (R, kQueries)) and y
// (area rows of kDims channels, row stride ld): a key's gradient from its column of the scores'.
template <int R>
inline void rows_times_queries(const float *z, const float *y, int64_t ld, int64_t area, __m256 acc[R][4]) {
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < 4; ++w) acc[r][w] = _mm256_setzero_ps();
  for (int64_t a = 0; a < area; ++a) {
    const float *ya = y + a * ld;
    const __m256 y0 = _mm256_loadu_ps(ya), y1 = _mm256_loadu_ps(ya + 8), y2 = _mm256_loadu_ps(ya + 16),
                 y3 = _mm256_loadu_ps(ya + 24);
    for (int r = 0; r < R; ++r) {
      const __m256 b = _mm256_set1_ps(z[r * kQueries + a]);
      acc[r][0] = _mm256_fmadd_ps(b, y0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(b, y1, acc[r][1]);
      acc[r][2] = _mm256_fmadd_ps(b, y2, acc[r][2]);
      acc[r][3] = _mm256_fmadd_ps(b, y3, acc[r][3]);
    }
  }
}

template <int R>
inline void store_key_rows(__m256 acc[R][4], float *dst, int64_t stride) {
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < 4; ++w) _mm256_storeu_ps(dst + r * stride + 8 * w, acc[r][w]);
}

// P^T and dS^T rows of keys j..j+R-1, with the bias gradient's rows added to grad_bias_rows.
template <int R>
inline void probability_rows(const float *const *key_rows, const float *const *value_rows, const float *qt,
                             const float *dot, const float *bias_rows, const float *off, const __m256 *lse,
                             const __m256 *delta, float *p, float *ds, float *grad_bias_rows) {
  using Vec = at::vec::Vectorized<float>;
  __m256 acc[R][kVectors];
  rows_times_transposed<R>(key_rows, qt, acc);
  for (int r = 0; r < R; ++r) {
    const __m256 o = _mm256_set1_ps(off[r]);
    for (int v = 0; v < kVectors; ++v) {
      const __m256 x = _mm256_add_ps(acc[r][v], _mm256_add_ps(_mm256_loadu_ps(bias_rows + r * kQueries + 8 * v), o));
      _mm256_storeu_ps(p + r * kQueries + 8 * v, Vec(_mm256_sub_ps(x, lse[v])).exp_u20());
    }
  }
  rows_times_transposed<R>(value_rows, dot, acc);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVectors; ++v) {
      const __m256 d = _mm256_mul_ps(_mm256_loadu_ps(p + r * kQueries + 8 * v), _mm256_sub_ps(acc[r][v], delta[v]));
      _mm256_storeu_ps(ds + r * kQueries + 8 * v, d);
      float *g = grad_bias_rows + r * kQueries + 8 * v;
      _mm256_storeu_ps(g, _mm256_add_ps(_mm256_loadu_ps(g), d));
    }
}

void backward(const at::Tensor &q, const at::Tensor &source, const at::Tensor &index, const at::Tensor &bias_t,
              const at::Tensor &off_map, const at::Tensor &out, const at::Tensor &lse, const at::Tensor &grad_out,
              at::Tensor &grad_q, at::Tensor &grad_source, at::Tensor &grad_bias_t, int64_t chunk_windows) {
  const int64_t batch = source.size(0), sources = source.size(1), heads = source.size(3);
  const int64_t windows = off_map.size(0), keys = off_map.size(1), area = q.size(1);
  const float *q_ptr = q.data_ptr<float>(), *src = source.data_ptr<float>(), *bt = bias_t.data_ptr<float>();
  const float *off = off_map.data_ptr<float>(), *o_ptr = out.data_ptr<float>(), *lse_ptr = lse.data_ptr<float>();
  const float *go_ptr = grad_out.data_ptr<float>();
  const int64_t *idx = index.data_ptr<int64_t>();
  float *gq_ptr = grad_q.data_ptr<float>(), *gs_ptr = grad_source.data_ptr<float>();
  const int64_t ld = heads * kDims, row = 2 * ld, bias_size = heads * keys * kQueries;
  const int threads = at::get_num_threads();
  std::vector<float> grad_bias_threads(threads * bias_size, 0.f);
  chunk_windows = std::max<int64_t>(1, std::min(chunk_windows, windows));
  std::vector<float> chunk(chunk_windows * keys * row);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t first = 0; first < windows; first += chunk_windows) {
      const int64_t count = std::min(chunk_windows, windows - first);
      at::parallel_for(0, count * heads, 1, [&](int64_t begin, int64_t end) {
        float *grad_bias_mine = grad_bias_threads.data() + at::get_thread_num() * bias_size;
        alignas(64) float qt[kDims * kQueries], dot[kDims * kQueries], gqt[kDims * kQueries];
        std::vector<float> probs(keys * kQueries), grads(keys * kQueries), gathered(keys * 2 * kDims);
        std::vector<const float *> key_rows(keys), value_rows(keys);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t h = task % heads, local = task / heads, n = first + local, bn = b * windows + n;
          const float *qw = q_ptr + bn * area * ld + h * kDims, *gow = go_ptr + bn * area * ld + h * kDims;
          const float *ow = o_ptr + bn * area * ld + h * kDims;
          alignas(64) float lse_pad[kQueries] = {0}, delta_pad[kQueries] = {0};
          const float *lse_row = lse_ptr + (bn * heads + h) * area;
          for (int64_t a = 0; a < area; ++a) {
            lse_pad[a] = lse_row[a];
            float d = 0.f;
            for (int c = 0; c < kDims; ++c) d += gow[a * ld + c] * ow[a * ld + c];
            delta_pad[a] = d;
          }
          for (int c = 0; c < kDims; ++c)
            for (int a = 0; a < kQueries; ++a) {
              qt[c * kQueries + a] = a < area ? qw[a * ld + c] : 0.f;
              dot[c * kQueries + a] = a < area ? gow[a * ld + c] : 0.f;
            }
          __m256 lse_v[kVectors], delta_v[kVectors];
          for (int v = 0; v < kVectors; ++v) {
            lse_v[v] = _mm256_load_ps(lse_pad + 8 * v);
            delta_v[v] = _mm256_load_ps(delta_pad + 8 * v);
          }
          const float *base = src + b * sources * row + h * kDims;
          for (int64_t j = 0; j < keys; ++j) {  // gathered first, as in the forward
            const float *from = base + idx[n * keys + j] * row;
            float *to = gathered.data() + j * 2 * kDims;
            std::memcpy(to, from, kDims * sizeof(float));
            std::memcpy(to + kDims, from + ld, kDims * sizeof(float));
            key_rows[j] = to;
            value_rows[j] = to + kDims;
          }
          const float *bias_rows = bt + h * keys * kQueries, *om = off + n * keys;
          float *gb = grad_bias_mine + h * keys * kQueries;
          int64_t j = 0;
          for (; j + 2 <= keys; j += 2)
            probability_rows<2>(&key_rows[j], &value_rows[j], qt, dot, bias_rows + j * kQueries, om + j, lse_v,
                                delta_v, probs.data() + j * kQueries, grads.data() + j * kQueries, gb + j * kQueries);
          if (j < keys)
            probability_rows<1>(&key_rows[j], &value_rows[j], qt, dot, bias_rows + j * kQueries, om + j, lse_v,
                                delta_v, probs.data() + j * kQueries, grads.data() + j * kQueries, gb + j * kQueries);
          // dQ^T = K^T dS^T, written back as rows of queries
          transposed_rows_times(key_rows.data(), 0, keys, grads.data(), gqt);
          float *gqw = gq_ptr + bn * area * ld + h * kDims;
          for (int64_t a = 0; a < area; ++a)
            for (int c = 0; c < kDims; ++c) gqw[a * ld + c] = gqt[c * kQueries + a];
          // dK = dS^T Q and dV = P^T dO, into the chunk's rows (local window, key, k/v, head, d)
          float *gk = chunk.data() + local * keys * row + h * kDims;
          __m256 acc[3][4];
          for (j = 0; j + 3 <= keys; j += 3) {
            rows_times_queries<3>(grads.data() + j * kQueries, qw, ld, area, acc);
            store_key_rows<3>(acc, gk + j * row, row);
            rows_times_queries<3>(probs.data() + j * kQueries, gow, ld, area, acc);
            store_key_rows<3>(acc, gk + j * row + ld, row);
          }
          for (; j < keys; ++j) {
            __m256 one[1][4];
            rows_times_queries<1>(grads.data() + j * kQueries, qw, ld, area, one);
            store_key_rows<1>(one, gk + j * row, row);
            rows_times_queries<1>(probs.data() + j * kQueries, gow, ld, area, one);
            store_key_rows<1>(one, gk + j * row + ld, row);
          }
        }
      });
      // The chunk's key and value gradients into the source's: threads split the columns, so two
      // windows that read one key never race.
      const int64_t *chunk_index = idx + first * keys;
      float *grad_image = gs_ptr + b * sources * row;
      at::parallel_for(0, row, 16, [&](int64_t c0, int64_t c1) {
        for (int64_t r = 0; r < count * keys; ++r) {
          float *dst = grad_image + chunk_index[r] * row;
          const float *from = chunk.data() + r * row;
          for (int64_t c = c0; c < c1; ++c) dst[c] += from[c];
        }
      });
    }
  }
  float *gbt = grad_bias_t.data_ptr<float>();
  for (int t = 0; t < threads; ++t)
    for (int64_t i = 0; i < bias_size; ++i) gbt[i] += grad_bias_threads[t * bias_size + i];
}

// Shapes: q (B*nW, w*w, heads, 32); source (B, S, 2, heads, 32); index (nW * keys,) into S;
// bias_t (heads, keys, 56); off_map (nW, keys). Checked here: a wrong layout would read out of
// bounds, not fail.
void check_inputs(const at::Tensor &q, const at::Tensor &source, const at::Tensor &index, const at::Tensor &bias_t,
                  const at::Tensor &off_map) {
  for (const at::Tensor *t : {&q, &source, &bias_t, &off_map}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat, "mmfocal_cpu: float32 CPU tensors only");
    TORCH_CHECK(t->is_contiguous(), "mmfocal_cpu: contiguous tensors only");
  }
  TORCH_CHECK(q.dim() == 4 && source.dim() == 5 && bias_t.dim() == 3 && off_map.dim() == 2, "mmfocal_cpu: ranks");
  TORCH_CHECK(q.size(3) == kDims && source.size(4) == kDims, "mmfocal_cpu: head dims 32 only");
  TORCH_CHECK(q.size(1) <= kQueries, "mmfocal_cpu: at most 56 queries a window");
  const int64_t heads = source.size(3), windows = off_map.size(0), keys = off_map.size(1);
  TORCH_CHECK(q.size(2) == heads && q.size(0) == source.size(0) * windows, "mmfocal_cpu: q against the source");
  TORCH_CHECK(bias_t.size(0) == heads && bias_t.size(1) == keys && bias_t.size(2) == kQueries,
              "mmfocal_cpu: bias_t must be (heads, keys, 56)");
  TORCH_CHECK(index.scalar_type() == at::kLong && index.is_contiguous() && index.numel() == windows * keys,
              "mmfocal_cpu: index must be nW * keys contiguous int64");
  const int64_t sources = source.size(1);
  const int64_t *idx = index.data_ptr<int64_t>();
  for (int64_t i = 0; i < index.numel(); ++i)
    TORCH_CHECK(idx[i] >= 0 && idx[i] < sources, "mmfocal_cpu: index out of the key source");
}

std::vector<at::Tensor> focal_forward(const at::Tensor &q, const at::Tensor &source, const at::Tensor &index,
                                      const at::Tensor &bias_t, const at::Tensor &off_map) {
  check_inputs(q, source, index, bias_t, off_map);
  auto out = at::empty_like(q);
  auto lse = at::empty({q.size(0), source.size(3), q.size(1)}, q.options());
  forward(q, source, index, bias_t, off_map, out, lse);
  return {out, lse};
}

std::vector<at::Tensor> focal_backward(const at::Tensor &q, const at::Tensor &source, const at::Tensor &index,
                                       const at::Tensor &bias_t, const at::Tensor &off_map, const at::Tensor &out,
                                       const at::Tensor &lse, const at::Tensor &grad_out, int64_t chunk_windows) {
  check_inputs(q, source, index, bias_t, off_map);
  for (const at::Tensor *t : {&out, &lse, &grad_out})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(), "mmfocal_cpu: contiguous float32 only");
  TORCH_CHECK(out.sizes() == q.sizes() && grad_out.sizes() == q.sizes() &&
                  lse.numel() == q.size(0) * q.size(1) * q.size(2),
              "mmfocal_cpu: out, grad_out and lse against q");
  auto grad_q = at::empty_like(q);
  auto grad_source = at::zeros_like(source);
  auto grad_bias_t = at::zeros_like(bias_t);
  backward(q, source, index, bias_t, off_map, out, lse, grad_out, grad_q, grad_source, grad_bias_t, chunk_windows);
  return {grad_q, grad_source, grad_bias_t};
}

}  // namespace

TORCH_LIBRARY(mmfocal_cpu, m) {
  m.def("focal_attention_forward(Tensor q, Tensor source, Tensor index, Tensor bias_t, Tensor off_map) -> Tensor[]");
  m.def("focal_attention_backward(Tensor q, Tensor source, Tensor index, Tensor bias_t, Tensor off_map, "
        "Tensor out, Tensor lse, Tensor grad_out, int chunk_windows) -> Tensor[]");
}
TORCH_LIBRARY_IMPL(mmfocal_cpu, CPU, m) {
  m.impl("focal_attention_forward", focal_forward);
  m.impl("focal_attention_backward", focal_backward);
}
