// The masking ops, written once for every backend: per-token decisions
// (host and device) and the host-side checks of an op call. The Python layer
// (ssl_fast/ops/masking.py) validates user input with friendlier messages;
// these checks guard direct calls of torch.ops.ssl_fast.*.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "philox.h"

namespace ssl_fast {

// What every token of a mask_tokens call needs. Thresholds compare 32-bit
// random words: select when u < select; then a decision word d chooses the
// mask token when d < mask, a random id when d < random (cumulative), else the
// token stays. A token selected by its own selection word (Bernoulli per
// token) decides with that word: once selected it is uniform below `select`,
// so the thresholds scale by select / 2^32 (selected_mask, selected_random)
// and only the random ids cost another Philox call. Exact counts and whole
// words take d from the kReplace stream.
struct MaskTokensParams {
  philox::Key key;
  uint64_t select, mask, random, selected_mask, selected_random;
  int64_t mask_token_id, vocab_size;
  const int64_t* special_ids;  // sorted, unique, inside the vocabulary
  int64_t n_special;
  bool exclude_special_from_random;

  SSL_FAST_HD bool in_special_ids(int64_t id) const {
    for (int64_t k = 0; k < n_special; ++k) {
      if (special_ids[k] == id) return true;
    }
    return false;
  }

  // The random id of token i: uniform over the vocabulary, or over its non-special ids.
  SSL_FAST_HD int64_t random_id(const philox::Out& r) const {
    if (!exclude_special_from_random) return philox::below(r.w[1], r.w[2], vocab_size);
    // The v-th id that is not special: step over the sorted special ids at or below it.
    int64_t v = philox::below(r.w[1], r.w[2], vocab_size - n_special);
    for (int64_t k = 0; k < n_special; ++k) v += special_ids[k] <= v;
    return v;
  }

  // What a token at flat index i selected by its own selection word u becomes.
  SSL_FAST_HD int64_t replace_selected_by(uint64_t i, int64_t id, uint32_t u) const {
    if (u < selected_mask) return mask_token_id;
    return u < selected_random ? random_id(key(i, philox::kReplace)) : id;
  }

  // What a token at flat index i selected otherwise (exact count, whole word) becomes.
  SSL_FAST_HD int64_t replace_selected(uint64_t i, int64_t id) const {
    const philox::Out r = key(i, philox::kReplace);
    if (r.w[0] < mask) return mask_token_id;
    return r.w[0] < random ? random_id(r) : id;
  }

  // The output id and the label of the token at flat index i. Any id is valid, inside
  // the vocabulary or not (as in transformers' collator): it stays when not selected,
  // is the label when selected, and nothing is looked up by it. own_word: the token was
  // selected by its own selection word u, which then decides too.
  struct Token {
    int64_t id, label;
  };
  SSL_FAST_HD Token token(uint64_t i, int64_t id, bool selected, bool own_word, uint32_t u) const {
    if (!selected) return {id, -100};
    return {own_word ? replace_selected_by(i, id, u) : replace_selected(i, id), id};
  }
};

// floor(select * t / 2^32): threshold t on a word uniform below 2^32, for a word uniform below select.
inline uint64_t scale_threshold(uint64_t select, uint64_t t) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(select) * t) >> 32);
}

// Selected tokens per row with exact_count: round(p * m) of the m non-special
// ones, ties to even as Python's round().
SSL_FAST_HD int64_t exact_count(double p, int64_t m) {
  const double k = nearbyint(p * static_cast<double>(m));
  return k < 0 ? 0 : (k > m ? m : static_cast<int64_t>(k));
}

// Exact-count rank key of a non-special token: its selection word, ties broken
// by position, so that the k smallest keys of a row are the selected tokens.
SSL_FAST_HD uint64_t rank_key(uint32_t u, int64_t position) {
  return (uint64_t(u) << 32) | uint64_t(position);
}

// A validated mask_tokens call: the operands as contiguous [rows, length] views.
struct MaskTokensCall {
  at::Tensor ids, special_mask, special_ids, word_ids;
  int64_t rows, length;
  MaskTokensParams params;
  double probability;
  bool exact;
};

inline MaskTokensCall check_mask_tokens(
    const char* op, const at::Tensor& input_ids, const std::optional<at::Tensor>& special_tokens_mask,
    const std::optional<at::Tensor>& special_ids, const std::optional<at::Tensor>& word_ids,
    int64_t mask_token_id, int64_t vocab_size, int64_t select_threshold, int64_t mask_threshold,
    int64_t random_threshold, double probability, bool exact, bool exclude_special_from_random,
    int64_t seed, int64_t offset) {
  TORCH_CHECK(input_ids.scalar_type() == at::kLong || input_ids.scalar_type() == at::kInt, op,
              ": input_ids must be int64 or int32, got ", input_ids.scalar_type());
  TORCH_CHECK(input_ids.dim() >= 1 && input_ids.numel() > 0, op, ": input_ids is empty (shape ",
              input_ids.sizes(), ")");
  TORCH_CHECK(vocab_size > 0 && vocab_size < (int64_t(1) << 31), op, ": vocab_size must be in [1, 2^31), got ",
              vocab_size);
  TORCH_CHECK(mask_token_id >= 0 && mask_token_id < vocab_size, op, ": mask_token_id ", mask_token_id,
              " is outside the vocabulary [0, ", vocab_size, ")");
  constexpr int64_t kOne = int64_t(1) << 32;
  TORCH_CHECK(0 <= select_threshold && select_threshold <= kOne && 0 <= mask_threshold &&
                  mask_threshold <= random_threshold && random_threshold <= kOne,
              op, ": thresholds must satisfy 0 <= mask <= random <= 2^32 and 0 <= select <= 2^32");
  TORCH_CHECK(!(exact && word_ids.has_value()), op, ": exact_count does not combine with word_ids");
  MaskTokensCall c;
  c.length = input_ids.size(-1);
  c.rows = input_ids.numel() / c.length;
  c.ids = input_ids.contiguous();
  auto same_shape = [&](const at::Tensor& t, const char* what, at::ScalarType dtype) {
    TORCH_CHECK(t.sizes() == input_ids.sizes(), op, ": ", what, " of shape ", t.sizes(),
                " does not match input_ids of shape ", input_ids.sizes());
    TORCH_CHECK(t.scalar_type() == dtype, op, ": ", what, " must be ", dtype, ", got ", t.scalar_type());
    TORCH_CHECK(t.device() == input_ids.device(), op, ": ", what, " is on ", t.device(),
                " but input_ids is on ", input_ids.device());
    return t.contiguous();
  };
  if (special_tokens_mask) c.special_mask = same_shape(*special_tokens_mask, "special_tokens_mask", at::kBool);
  if (word_ids) c.word_ids = same_shape(*word_ids, "word_ids", at::kLong);
  int64_t n_special = 0;
  if (special_ids) {
    TORCH_CHECK(special_ids->dim() == 1 && special_ids->scalar_type() == at::kLong &&
                    special_ids->device() == input_ids.device(),
                op, ": special_ids must be a 1-D int64 tensor on the device of input_ids");
    c.special_ids = special_ids->contiguous();
    n_special = c.special_ids.numel();
  }
  TORCH_CHECK(!exclude_special_from_random || n_special < vocab_size, op,
              ": every id of the vocabulary is special, no random replacement is possible");
  c.probability = probability;
  c.exact = exact;
  c.params = MaskTokensParams{
      philox::make_key(seed, offset), uint64_t(select_threshold), uint64_t(mask_threshold),
      uint64_t(random_threshold), scale_threshold(select_threshold, mask_threshold),
      scale_threshold(select_threshold, random_threshold), mask_token_id, vocab_size,
      n_special ? c.special_ids.data_ptr<int64_t>() : nullptr, n_special, exclude_special_from_random};
  return c;
}

inline void check_random_masking(const char* op, const at::Tensor& x, int64_t len_keep) {
  TORCH_CHECK(x.dim() == 3, op, ": x must have shape [N, L, D], got ", x.sizes());
  TORCH_CHECK(0 <= len_keep && len_keep <= x.size(1), op, ": len_keep must be in [0, L = ", x.size(1),
              "], got ", len_keep);
}

}  // namespace ssl_fast
