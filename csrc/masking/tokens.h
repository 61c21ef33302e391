// The per-token decisions of mask_tokens, the same on the host and the device.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/philox.h"

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

}  // namespace ssl_fast
