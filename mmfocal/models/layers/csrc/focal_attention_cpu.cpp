// mmfocal's own CPU kernels for the focal attention (both passes), built on first use by
// mmfocal/models/layers/compiled_kernels.py and chosen by attention_kernels.attend.
//
// softmax(q k^T + bias + off_map) v for one (image, window, head) per task, its scores kept in
// registers while they are made. Why: the attention's products have an inner dimension of 32 (head
// dims), and through the BLAS on small per-window matrices (PyTorch's flash kernel, bmm) they ran at
// about half the FLOP rate of the linear layers (docs/speed.md). Keys-major: S^T[j][a] for key j and
// query a, so that the softmax over the keys is a vertical max and sum over rows of query vectors
// and every product is register-blocked FMAs (a few keys or channels times all padded queries).
// Each task first gathers its head's keys and values into one buffer (the products then read it in
// order). The backward recomputes the probabilities from the saved log-sum-exp, as the PyTorch
// kernels' does, and adds the key and value gradients of a chunk of windows into the key source
// with the threads split by columns, so two windows that read one key never race. Head dims 32, at
// most 56 queries (window 7), float32, a shared (heads, keys, kQueries) bias transposed from (heads,
// w*w, keys); x86-64.
//
// One source, two builds (compiled_kernels.py picks the one PyTorch's own kernels use here):
// AVX-512 (vectors of 16 floats, 32 registers: queries padded to 64, four keys or channels a pass)
// or AVX2 with FMA (vectors of 8, 16 registers: queries padded to 56, two a pass).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace {

#if defined(CPU_CAPABILITY_AVX512)
using Reg = __m512;
constexpr int kLanes = 16;
constexpr int kKeyBlock = 4;      // keys a pass of the score products: 4 x 4 accumulators
constexpr int kChannelBlock = 4;  // channels a pass of the output products: 4 x 4
constexpr int kGradKeyBlock = 6;  // keys a pass of the key gradients: 6 x 2
inline Reg zero() { return _mm512_setzero_ps(); }
inline Reg broadcast(float x) { return _mm512_set1_ps(x); }
inline Reg load(const float *p) { return _mm512_loadu_ps(p); }
inline void store(float *p, Reg x) { _mm512_storeu_ps(p, x); }
inline Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
inline Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
inline Reg sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
inline Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
inline Reg max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
#elif defined(CPU_CAPABILITY_AVX2)
using Reg = __m256;
constexpr int kLanes = 8;
constexpr int kKeyBlock = 2;      // 2 x 7 accumulators of the 16 registers
constexpr int kChannelBlock = 2;  // 2 x 7
constexpr int kGradKeyBlock = 3;  // 3 x 4
inline Reg zero() { return _mm256_setzero_ps(); }
inline Reg broadcast(float x) { return _mm256_set1_ps(x); }
inline Reg load(const float *p) { return _mm256_loadu_ps(p); }
inline void store(float *p, Reg x) { _mm256_storeu_ps(p, x); }
inline Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
inline Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
inline Reg sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
inline Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
inline Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
#else
#error "built with -DCPU_CAPABILITY_AVX512 or -DCPU_CAPABILITY_AVX2 (compiled_kernels.py)"
#endif

// exp(x) through PyTorch's vectorised exp of this build's vector width (1 ulp within 20 bits);
// torch releases without exp_u20 (2.1) take their exp (Sleef's, within 1 ulp): the same function.
template <typename V>
inline auto vector_exp(const V &x, int) -> decltype(x.exp_u20()) { return x.exp_u20(); }
template <typename V>
inline V vector_exp(const V &x, long) { return x.exp(); }
inline Reg exp(Reg x) { return vector_exp(at::vec::Vectorized<float>(x), 0); }

constexpr int kDims = 32;                                              // head dims
constexpr int kMaxQueries = 56;                                        // queries of a window (7 x 7 = 49)
constexpr int kQueries = (kMaxQueries + kLanes - 1) / kLanes * kLanes;  // padded to whole vectors
constexpr int kVectors = kQueries / kLanes;
constexpr int kDimVectors = kDims / kLanes;

// acc[r][v] = sum_c rows[r][c] * t[c][v-th vector] for R rows (keys) at once; t is (kDims, kQueries).
template <int R>
inline void rows_times_transposed(const float *const *rows, const float *t, Reg acc[R][kVectors]) {
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVectors; ++v) acc[r][v] = zero();
  for (int c = 0; c < kDims; ++c) {
    Reg b[R];
    for (int r = 0; r < R; ++r) b[r] = broadcast(rows[r][c]);
    const float *tc = t + c * kQueries;
    for (int v = 0; v < kVectors; ++v) {
      const Reg x = load(tc + kLanes * v);
      for (int r = 0; r < R; ++r) acc[r][v] = fma(b[r], x, acc[r][v]);
    }
  }
}

// Rows j..j+R-1 of the scores: the products plus bias and off-map logit, stored into s and
// folded into the running maxima over keys.
template <int R>
inline void score_rows(const float *const *rows, const float *qt, const float *bias_rows, const float *off,
                       float *s, Reg *peak) {
  Reg acc[R][kVectors];
  rows_times_transposed<R>(rows, qt, acc);
  for (int r = 0; r < R; ++r) {
    const Reg o = broadcast(off[r]);
    for (int v = 0; v < kVectors; ++v) {
      const Reg x = add(acc[r][v], add(load(bias_rows + r * kQueries + kLanes * v), o));
      store(s + r * kQueries + kLanes * v, x);
      peak[v] = max(peak[v], x);
    }
  }
}

// out_t[c][a] = sum_j rows[j][offset + c] * z[j][a] for all kDims channels, kChannelBlock at a
// time; z is (keys, kQueries) keys-major, out_t (kDims, kQueries).
inline void transposed_rows_times(const float *const *rows, int64_t offset, int64_t keys, const float *z,
                                  float *out_t) {
  for (int c = 0; c < kDims; c += kChannelBlock) {
    Reg acc[kChannelBlock][kVectors];
    for (int i = 0; i < kChannelBlock; ++i)
      for (int v = 0; v < kVectors; ++v) acc[i][v] = zero();
    for (int64_t j = 0; j < keys; ++j) {
      const float *x = rows[j] + offset + c;
      Reg b[kChannelBlock];
      for (int i = 0; i < kChannelBlock; ++i) b[i] = broadcast(x[i]);
      const float *zj = z + j * kQueries;
      for (int v = 0; v < kVectors; ++v) {
        const Reg zv = load(zj + kLanes * v);
        for (int i = 0; i < kChannelBlock; ++i) acc[i][v] = fma(b[i], zv, acc[i][v]);
      }
    }
    for (int i = 0; i < kChannelBlock; ++i)
      for (int v = 0; v < kVectors; ++v) store(out_t + (c + i) * kQueries + kLanes * v, acc[i][v]);
  }
}

// rows<R>(j) over keys 0..keys-1: blocks of R = kBlock rows from key j, then the rest one row (R = 1) at a time.
template <int kBlock, typename Rows>
inline void by_blocks_of_rows(int64_t keys, Rows rows) {
  int64_t j = 0;
  for (; j + kBlock <= keys; j += kBlock) rows.template operator()<kBlock>(j);
  for (; j < keys; ++j) rows.template operator()<1>(j);
}

// The window's keys and values of one head gathered into one buffer (rows of kDims keys then kDims
// values), key_rows pointing at them: the products then read it in order, where rows of the
// source scattered over the map would stall them on each key's first load. base is the head's
// first channel in the image's source, ld the channels of a key (heads * kDims).
inline void gather_head(const float *base, const int64_t *window_index, int64_t keys, int64_t ld,
                        std::vector<float> &gathered, std::vector<const float *> &key_rows) {
  for (int64_t j = 0; j < keys; ++j) {
    const float *from = base + window_index[j] * 2 * ld;
    float *to = gathered.data() + j * 2 * kDims;
    std::memcpy(to, from, kDims * sizeof(float));
    std::memcpy(to + kDims, from + ld, kDims * sizeof(float));
    key_rows[j] = to;
  }
}

// t[c][a] = rows[a][c] for the area rows of a window's head (row stride ld), zero for the
// padded queries: (kDims, kQueries).
inline void transpose_queries(const float *rows, int64_t ld, int64_t area, float *t) {
  for (int c = 0; c < kDims; ++c)
    for (int a = 0; a < kQueries; ++a) t[c * kQueries + a] = a < area ? rows[a * ld + c] : 0.f;
}

// The forward pass: out and lse for every (image, window, head).
// Loops, outermost first:
//   1. tasks, one (image, window, head) each, shared among the threads; for each task:
//   2. its queries transposed to (kDims, kQueries) and its head's keys and values gathered;
//   3. the scores S^T = K Q^T + bias + off-map logit, kKeyBlock keys a pass, and the running
//      maximum over the keys of each query;
//   4. the softmax numerators exp(S - max) in place, key by key, and their sum for each query;
//   5. the output O^T = V^T P^T, then written out query by query, divided by the sums;
//   6. the log-sum-exp of each query, max + log(sum), for the backward.
void forward(const at::Tensor &q, const at::Tensor &source, const at::Tensor &index, const at::Tensor &bias_t,
             const at::Tensor &off_map, at::Tensor &out, at::Tensor &lse) {
  const int64_t batch = source.size(0), sources = source.size(1), heads = source.size(3);
  const int64_t windows = off_map.size(0), keys = off_map.size(1), area = q.size(1);
  const float *q_data = q.data_ptr<float>(), *source_data = source.data_ptr<float>();
  const float *bias_t_data = bias_t.data_ptr<float>(), *off_map_data = off_map.data_ptr<float>();
  const int64_t *index_data = index.data_ptr<int64_t>();
  float *out_data = out.data_ptr<float>(), *lse_data = lse.data_ptr<float>();
  // Floats of a query (and of a key) over all heads, and of a row of the key source (key and value).
  const int64_t channels = heads * kDims, source_row = 2 * channels;
  at::parallel_for(0, batch * windows * heads, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float queries_t[kDims * kQueries];
    alignas(64) float out_t[kDims * kQueries];
    std::vector<float> probs(keys * kQueries), gathered(keys * 2 * kDims);
    std::vector<const float *> key_rows(keys);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task % heads, image_window = task / heads;
      const int64_t window = image_window % windows, image = image_window / windows;
      const float *window_queries = q_data + image_window * area * channels + head * kDims;
      transpose_queries(window_queries, channels, area, queries_t);
      gather_head(source_data + image * sources * source_row + head * kDims, index_data + window * keys, keys,
                  channels, gathered, key_rows);
      const float *bias_rows = bias_t_data + head * keys * kQueries;
      const float *window_off_map = off_map_data + window * keys;
      float *scores = probs.data();

      Reg peak[kVectors];
      for (int vec = 0; vec < kVectors; ++vec) peak[vec] = broadcast(-INFINITY);
      by_blocks_of_rows<kKeyBlock>(keys, [&]<int kRows>(int64_t first_key) {
        score_rows<kRows>(&key_rows[first_key], queries_t, bias_rows + first_key * kQueries,
                          window_off_map + first_key, scores + first_key * kQueries, peak);
      });

      Reg sum[kVectors];
      for (int vec = 0; vec < kVectors; ++vec) sum[vec] = zero();
      for (int64_t key = 0; key < keys; ++key)
        for (int vec = 0; vec < kVectors; ++vec) {
          float *score = scores + key * kQueries + kLanes * vec;
          const Reg numerator = exp(sub(load(score), peak[vec]));
          store(score, numerator);
          sum[vec] = add(sum[vec], numerator);
        }

      // O^T[c][a] = sum_j V[j][c] P^T[j][a], normalised by the sums as it is written out.
      transposed_rows_times(key_rows.data(), kDims, keys, scores, out_t);
      alignas(64) float peaks[kQueries], sums[kQueries];
      for (int vec = 0; vec < kVectors; ++vec) {
        store(peaks + kLanes * vec, peak[vec]);
        store(sums + kLanes * vec, sum[vec]);
      }
      float *window_out = out_data + image_window * area * channels + head * kDims;
      for (int64_t query = 0; query < area; ++query) {
        const float inverse_sum = 1.f / sums[query];
        for (int channel = 0; channel < kDims; ++channel)
          window_out[query * channels + channel] = out_t[channel * kQueries + query] * inverse_sum;
      }
      float *lse_row = lse_data + (image_window * heads + head) * area;
      for (int64_t query = 0; query < area; ++query) lse_row[query] = peaks[query] + std::log(sums[query]);
    }
  });
}

// dst rows r (stride `stride`) = sum_{a < area} z[r][a] * y[a][:] for R rows of z (keys, (R,
// kQueries)) and y (area rows of kDims channels, row stride ld): key gradients from their columns
// of the scores' gradients (dK = dS^T Q) or of the probabilities (dV = P^T dO).
template <int R>
inline void rows_times_queries(const float *z, const float *y, int64_t ld, int64_t area, float *dst, int64_t stride) {
  Reg acc[R][kDimVectors];
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < kDimVectors; ++w) acc[r][w] = zero();
  for (int64_t a = 0; a < area; ++a) {
    Reg ya[kDimVectors];
    for (int w = 0; w < kDimVectors; ++w) ya[w] = load(y + a * ld + kLanes * w);
    for (int r = 0; r < R; ++r) {
      const Reg b = broadcast(z[r * kQueries + a]);
      for (int w = 0; w < kDimVectors; ++w) acc[r][w] = fma(b, ya[w], acc[r][w]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < kDimVectors; ++w) store(dst + r * stride + kLanes * w, acc[r][w]);
}

// P^T and dS^T rows of keys j..j+R-1, with the bias gradient's rows added to grad_bias_rows.
template <int R>
inline void probability_rows(const float *const *key_rows, const float *const *value_rows, const float *qt,
                             const float *dot, const float *bias_rows, const float *off, const Reg *lse,
                             const Reg *delta, float *p, float *ds, float *grad_bias_rows) {
  Reg acc[R][kVectors];
  rows_times_transposed<R>(key_rows, qt, acc);
  for (int r = 0; r < R; ++r) {
    const Reg o = broadcast(off[r]);
    for (int v = 0; v < kVectors; ++v) {
      const Reg x = add(acc[r][v], add(load(bias_rows + r * kQueries + kLanes * v), o));
      store(p + r * kQueries + kLanes * v, exp(sub(x, lse[v])));
    }
  }
  rows_times_transposed<R>(value_rows, dot, acc);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVectors; ++v) {
      const Reg d = mul(load(p + r * kQueries + kLanes * v), sub(acc[r][v], delta[v]));
      store(ds + r * kQueries + kLanes * v, d);
      float *g = grad_bias_rows + r * kQueries + kLanes * v;
      store(g, add(load(g), d));
    }
}

// The backward pass: gradients of q, the key source and bias_t, recomputing the probabilities
// P = exp(S - lse) from the saved log-sum-exp. Loops, outermost first:
//   1. images;
//   2. chunks of chunk_windows windows;
//   3. tasks, one (window of the chunk, head) each, shared among the threads; for each task:
//   4. per query: its log-sum-exp, and delta = dO . O (the softmax backward's row sums);
//      then the queries and dO transposed, and the head's keys and values gathered;
//   5. P^T and dS^T = P^T * (V dO^T - delta), kKeyBlock keys a pass, the bias gradient (dS^T
//      summed over the windows) added into this thread's copy;
//   6. dQ = dS K, written back query by query;
//   7. dK = dS^T Q and dV = P^T dO, kGradKeyBlock keys a pass, into the chunk's buffer;
//   8. (per chunk) the buffer's key and value gradients added into the key source's gradient,
//      the threads split by columns so that two windows reading one key never race;
//   9. (at the end) the threads' bias gradients summed.
void backward(const at::Tensor &q, const at::Tensor &source, const at::Tensor &index, const at::Tensor &bias_t,
              const at::Tensor &off_map, const at::Tensor &out, const at::Tensor &lse, const at::Tensor &grad_out,
              at::Tensor &grad_q, at::Tensor &grad_source, at::Tensor &grad_bias_t, int64_t chunk_windows) {
  const int64_t batch = source.size(0), sources = source.size(1), heads = source.size(3);
  const int64_t windows = off_map.size(0), keys = off_map.size(1), area = q.size(1);
  const float *q_data = q.data_ptr<float>(), *source_data = source.data_ptr<float>();
  const float *bias_t_data = bias_t.data_ptr<float>(), *off_map_data = off_map.data_ptr<float>();
  const float *out_data = out.data_ptr<float>(), *lse_data = lse.data_ptr<float>();
  const float *grad_out_data = grad_out.data_ptr<float>();
  const int64_t *index_data = index.data_ptr<int64_t>();
  float *grad_q_data = grad_q.data_ptr<float>(), *grad_source_data = grad_source.data_ptr<float>();
  // Floats of a query (and of a key) over all heads, of a row of the key source, and of bias_t.
  const int64_t channels = heads * kDims, source_row = 2 * channels, bias_size = heads * keys * kQueries;
  const int threads = at::get_num_threads();
  std::vector<float> grad_bias_threads(threads * bias_size, 0.f);
  chunk_windows = std::max<int64_t>(1, std::min(chunk_windows, windows));
  // The chunk's key and value gradients: (local window, key, k/v, head, d).
  std::vector<float> chunk_grads(chunk_windows * keys * source_row);
  for (int64_t image = 0; image < batch; ++image) {
    for (int64_t first_window = 0; first_window < windows; first_window += chunk_windows) {
      const int64_t count = std::min(chunk_windows, windows - first_window);
      at::parallel_for(0, count * heads, 1, [&](int64_t begin, int64_t end) {
        float *grad_bias_mine = grad_bias_threads.data() + at::get_thread_num() * bias_size;
        alignas(64) float queries_t[kDims * kQueries], grad_out_t[kDims * kQueries], grad_q_t[kDims * kQueries];
        std::vector<float> probs(keys * kQueries), grad_scores(keys * kQueries), gathered(keys * 2 * kDims);
        std::vector<const float *> key_rows(keys), value_rows(keys);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t head = task % heads, local_window = task / heads;
          const int64_t window = first_window + local_window, image_window = image * windows + window;
          const int64_t offset = image_window * area * channels + head * kDims;
          const float *window_queries = q_data + offset, *window_grad_out = grad_out_data + offset;
          const float *window_out = out_data + offset;
          alignas(64) float lse_pad[kQueries] = {0}, delta_pad[kQueries] = {0};
          const float *lse_row = lse_data + (image_window * heads + head) * area;
          for (int64_t query = 0; query < area; ++query) {
            lse_pad[query] = lse_row[query];
            float delta = 0.f;
            for (int channel = 0; channel < kDims; ++channel)
              delta += window_grad_out[query * channels + channel] * window_out[query * channels + channel];
            delta_pad[query] = delta;
          }
          transpose_queries(window_queries, channels, area, queries_t);
          transpose_queries(window_grad_out, channels, area, grad_out_t);
          Reg lse_vec[kVectors], delta_vec[kVectors];
          for (int vec = 0; vec < kVectors; ++vec) {
            lse_vec[vec] = load(lse_pad + kLanes * vec);
            delta_vec[vec] = load(delta_pad + kLanes * vec);
          }
          gather_head(source_data + image * sources * source_row + head * kDims, index_data + window * keys, keys,
                      channels, gathered, key_rows);
          for (int64_t key = 0; key < keys; ++key) value_rows[key] = key_rows[key] + kDims;
          const float *bias_rows = bias_t_data + head * keys * kQueries;
          const float *window_off_map = off_map_data + window * keys;
          float *head_grad_bias = grad_bias_mine + head * keys * kQueries;
          by_blocks_of_rows<kKeyBlock>(keys, [&]<int kRows>(int64_t first_key) {
            probability_rows<kRows>(&key_rows[first_key], &value_rows[first_key], queries_t, grad_out_t,
                                    bias_rows + first_key * kQueries, window_off_map + first_key, lse_vec, delta_vec,
                                    probs.data() + first_key * kQueries, grad_scores.data() + first_key * kQueries,
                                    head_grad_bias + first_key * kQueries);
          });
          // dQ^T = K^T dS^T, written back as rows of queries
          transposed_rows_times(key_rows.data(), 0, keys, grad_scores.data(), grad_q_t);
          float *window_grad_q = grad_q_data + offset;
          for (int64_t query = 0; query < area; ++query)
            for (int channel = 0; channel < kDims; ++channel)
              window_grad_q[query * channels + channel] = grad_q_t[channel * kQueries + query];
          // dK = dS^T Q and dV = P^T dO, into the chunk's rows (local window, key, k/v, head, d)
          float *grad_key_rows = chunk_grads.data() + local_window * keys * source_row + head * kDims;
          by_blocks_of_rows<kGradKeyBlock>(keys, [&]<int kRows>(int64_t first_key) {
            rows_times_queries<kRows>(grad_scores.data() + first_key * kQueries, window_queries, channels, area,
                                      grad_key_rows + first_key * source_row, source_row);
            rows_times_queries<kRows>(probs.data() + first_key * kQueries, window_grad_out, channels, area,
                                      grad_key_rows + first_key * source_row + channels, source_row);
          });
        }
      });
      // The chunk's key and value gradients into the source's: threads split the columns, so two
      // windows that read one key never race.
      const int64_t *chunk_index = index_data + first_window * keys;
      float *grad_image = grad_source_data + image * sources * source_row;
      at::parallel_for(0, source_row, 16, [&](int64_t column_begin, int64_t column_end) {
        for (int64_t key_row = 0; key_row < count * keys; ++key_row) {
          float *target = grad_image + chunk_index[key_row] * source_row;
          const float *from = chunk_grads.data() + key_row * source_row;
          for (int64_t column = column_begin; column < column_end; ++column) target[column] += from[column];
        }
      });
    }
  }
  float *grad_bias_t_data = grad_bias_t.data_ptr<float>();
  for (int thread = 0; thread < threads; ++thread)
    for (int64_t element = 0; element < bias_size; ++element)
      grad_bias_t_data[element] += grad_bias_threads[thread * bias_size + element];
}

// Shapes: q (B*nW, w*w, heads, 32); source (B, S, 2, heads, 32); index (nW * keys,) into S;
// bias_t (heads, keys, kQueries); off_map (nW, keys). Checked here: a wrong layout would read out of
// bounds, not fail.
void check_inputs(const at::Tensor &q, const at::Tensor &source, const at::Tensor &index, const at::Tensor &bias_t,
                  const at::Tensor &off_map) {
  for (const at::Tensor *t : {&q, &source, &bias_t, &off_map}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat, "mmfocal_cpu: float32 CPU tensors only");
    TORCH_CHECK(t->is_contiguous(), "mmfocal_cpu: contiguous tensors only");
  }
  TORCH_CHECK(q.dim() == 4 && source.dim() == 5 && bias_t.dim() == 3 && off_map.dim() == 2, "mmfocal_cpu: ranks");
  TORCH_CHECK(q.size(3) == kDims && source.size(4) == kDims, "mmfocal_cpu: head dims 32 only");
  TORCH_CHECK(q.size(1) <= kMaxQueries, "mmfocal_cpu: at most ", kMaxQueries, " queries a window");
  const int64_t heads = source.size(3), windows = off_map.size(0), keys = off_map.size(1);
  TORCH_CHECK(q.size(2) == heads && q.size(0) == source.size(0) * windows, "mmfocal_cpu: q against the source");
  TORCH_CHECK(bias_t.size(0) == heads && bias_t.size(1) == keys && bias_t.size(2) == kQueries,
              "mmfocal_cpu: bias_t must be (heads, keys, ", kQueries, ")");
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
  m.def("padded_queries() -> int", [] { return static_cast<int64_t>(kQueries); });
  m.def("focal_attention_forward(Tensor q, Tensor source, Tensor index, Tensor bias_t, Tensor off_map) -> Tensor[]");
  m.def("focal_attention_backward(Tensor q, Tensor source, Tensor index, Tensor bias_t, Tensor off_map, "
        "Tensor out, Tensor lse, Tensor grad_out, int chunk_windows) -> Tensor[]");
}
TORCH_LIBRARY_IMPL(mmfocal_cpu, CPU, m) {
  m.impl("focal_attention_forward", focal_forward);
  m.impl("focal_attention_backward", focal_backward);
}
