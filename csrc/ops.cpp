// Operator schemas of the ssl_fast namespace. Kernels live in a folder per family
// (regression/, contrastive/, masking/: cpu.cpp, cuda.cu); fake (meta) kernels and
// autograd are registered from Python (ssl_fast/ops/).
#include <torch/library.h>

TORCH_LIBRARY(ssl_fast, m) {
  // Regression losses. reduction follows at::Reduction (0 none, 1 mean, 2 sum).
  // weight, when given, broadcasts against the loss and scales each element
  // (the Python layer turns a position mask into it). With compute_grad and a
  // reducing reduction the forward also returns d loss / d input, so that a
  // backward with grad_output == 1 moves no bytes; otherwise it returns an
  // empty tensor.
  m.def(
      "smooth_l1_loss(Tensor input, Tensor target, float beta, int reduction, "
      "Tensor? weight, bool compute_grad) -> (Tensor, Tensor)");
  m.def(
      "smooth_l1_loss_backward(Tensor grad_output, Tensor input, Tensor target, "
      "float beta, int reduction, Tensor? weight) -> Tensor");
  m.def(
      "mse_loss(Tensor input, Tensor target, int reduction, Tensor? weight, "
      "bool compute_grad) -> (Tensor, Tensor)");
  m.def(
      "mse_loss_backward(Tensor grad_output, Tensor input, Tensor target, "
      "int reduction, Tensor? weight) -> Tensor");
  // Binary cross-entropy of probabilities (input in [0, 1], else an error) and of
  // logits; pos_weight (accumulation dtype) broadcasts to the loss like weight.
  m.def(
      "binary_cross_entropy(Tensor input, Tensor target, int reduction, Tensor? weight, "
      "bool compute_grad) -> (Tensor, Tensor)");
  m.def(
      "binary_cross_entropy_backward(Tensor grad_output, Tensor input, Tensor target, "
      "int reduction, Tensor? weight) -> Tensor");
  m.def(
      "binary_cross_entropy_with_logits(Tensor input, Tensor target, Tensor? pos_weight, "
      "int reduction, Tensor? weight, bool compute_grad) -> (Tensor, Tensor)");
  m.def(
      "binary_cross_entropy_with_logits_backward(Tensor grad_output, Tensor input, Tensor target, "
      "Tensor? pos_weight, int reduction, Tensor? weight) -> Tensor");

  // Contrastive log-sum-exp (NT-Xent, InfoNCE; see contrastive/args.h). Returns
  // the unit rows qn, kn (in the accumulation type; kn empty without k) and the
  // log-sum-exp of each row and, with col_lse, of each column (else empty), over the
  // logits scale * qn_i . kn_j minus the excluded pairs (the diagonal without k, else
  // (i, exclude[i]) where exclude[i] >= 0). Only O(rows + cols) statistics are stored.
  m.def(
      "contrastive_lse(Tensor q, Tensor? k, Tensor scale, Tensor? exclude, bool col_lse) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients of q, k and scale (output_mask selects them; the others are empty)
  // from the gradients of the four outputs, recomputing the logits tile by tile.
  m.def(
      "contrastive_lse_backward(Tensor? grad_qn, Tensor? grad_kn, Tensor? grad_row_lse, "
      "Tensor? grad_col_lse, Tensor q, Tensor? k, Tensor qn, Tensor kn, Tensor row_lse, "
      "Tensor col_lse, Tensor scale, Tensor? exclude, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");

  // SigLIP's sigmoid loss (see contrastive/siglip.h): (1 / rows) sum over all pairs of
  // softplus(-y_ij (scale * img_i . txt_j + bias)), y = +1 at (i, i + offset), else -1;
  // the features are taken as they are. Returns the loss (0-dim, accumulation type) and,
  // where compute_grad asks (img, txt, scale, bias), its gradients, else empty tensors.
  // Nothing rows x cols is stored.
  m.def(
      "siglip(Tensor img, Tensor txt, Tensor scale, Tensor bias, int offset, bool[4] compute_grad) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // grad times the gradients that output_mask asks for (the others empty), recomputing
  // the logits tile by tile.
  m.def(
      "siglip_backward(Tensor grad, Tensor img, Tensor txt, Tensor scale, Tensor bias, int offset, "
      "bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");

  // Masking for masked modelling (masking/tokens.h). Random bits come from
  // Philox keyed by (seed, offset) and indexed by element (common/philox.h),
  // so every backend gives the same output for the same seed. mask_tokens
  // compares 32-bit words with the thresholds (probability * 2^32, computed
  // once in Python): select when u < select_threshold, then the mask token when
  // a decision word is below mask_threshold, a random id when it is below
  // random_threshold (cumulative), else the token stays (MaskTokensParams says
  // which word decides); labels hold the original id where selected, -100
  // elsewhere. mlm_probability only serves exact_count. check_ids: a ValueError, before
  // anything is written, when an id lies outside [0, vocab_size); without it such ids pass
  // through (kept, or their own label when selected; never looked up).
  m.def(
      "mask_tokens(Tensor input_ids, Tensor? special_tokens_mask, Tensor? special_ids, "
      "Tensor? word_ids, int mask_token_id, int vocab_size, int select_threshold, "
      "int mask_threshold, int random_threshold, float mlm_probability, bool exact_count, "
      "bool exclude_special_from_random, bool check_ids, int seed, int offset) -> (Tensor, Tensor)");
  m.def(
      "mask_tokens_(Tensor(a!) input_ids, Tensor? special_tokens_mask, Tensor? special_ids, "
      "Tensor? word_ids, int mask_token_id, int vocab_size, int select_threshold, "
      "int mask_threshold, int random_threshold, float mlm_probability, bool exact_count, "
      "bool exclude_special_from_random, bool check_ids, int seed, int offset) -> Tensor");
  // MAE's random masking of [N, L, D] patches: keeps the len_keep positions with
  // the smallest noise, in noise order -> (x_kept, mask (1 = removed, float32),
  // ids_restore).
  m.def("random_masking(Tensor x, int len_keep, int seed, int offset) -> (Tensor, Tensor, Tensor)");
}
