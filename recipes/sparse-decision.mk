# Sparse decision layers (../shared/seeds/004_*.txt; Wong, Santurkar, Madry, ICML 2021; METHODS.md 5):
# train a network with a validation split, refit its last layer as an elastic-net sparse linear
# layer along the whole regularisation path (`interp sparsify`), keep the sparsest layer within 5
# points of the best validation accuracy (the paper's rule) and, for comparison, the best layer with
# at most a given number of features per class (the note: "around 15 features per class" on
# CIFAR-10); draw every kept feature's most and least activating test images with LIME superpixels
# fitted to the feature; evaluate the dense and the sparse model on the same test set.  Every target
# is one `interp` call; --force: a folder that is made again is replaced as a whole.
#
#   make -f recipes/sparse-decision.mk INTERP=.venv/bin/interp             # BUDGET=small, out/sparse-decision/
#   make -f recipes/sparse-decision.mk BUDGET=paper DEVICE=cuda
#
# Budgets (BUDGET=...):
#   tiny   seconds: LeNet on the embedded 8x8 digits, 5 epochs, 10 λ values, 1 image per side of each
#          feature with 50 LIME samples, at most 5 features per class (tests/test_recipes.py)
#   small  (default) about 4 minutes on 2 CPU cores: ResNet-20 on 10000 training (10 % held out for
#          validation) and 2000 test images of CIFAR-10 from $(DATA)/cifar10.npz, 5 epochs, the paper's
#          100 λ values, 3 images per side with 300 LIME samples, at most 15 features per class; without
#          cifar10.npz, LeNet on the digits with 20 epochs (summary.md says which)
#   paper  a GPU: ResNet-56 on all of CIFAR-10 (10 % held out, ddn's val_frac) with the 100 epochs of its recipe,
#          the paper's path (100 λ, α 0.99, ε 1e-3), 5 images per side with LIME's 1000 samples
#
# Writes $(OUT)/dense.safetensors (and its training log), sparse/ (sparse.safetensors, path.json,
# path.png, features.json, features/feature-NNNN.png), sparse-fpc/ (the features-per-class
# selection), tables/, report/index.html and summary.md.

OUT ?= out/sparse-decision
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

ifeq ($(BUDGET),tiny)
  TRAIN     := --arch lenet --dataset digits --epochs 5
  DATA_NOTE := LeNet on the embedded 8x8 digits (the tiny budget never reads real data)
  PATH_OPTS := --lambdas 10
  VISUALIZE := --visualize 1 --lime n_samples=50
  FPC       := 5
else ifeq ($(BUDGET),small)
  ifneq ($(HAVE_CIFAR),)
    TRAIN     := --arch resnet20 --dataset cifar10 --limit-train 10000 --limit-test 2000 --epochs 5
    DATA_NOTE := ResNet-20 on CIFAR-10 ($(DATA)/cifar10.npz), 10000 training and 2000 test images, 5 epochs
  else
    TRAIN     := --arch lenet --dataset digits --epochs 20
    DATA_NOTE := LeNet on the embedded 8x8 digits: $(DATA)/cifar10.npz was not found
  endif
  PATH_OPTS :=
  VISUALIZE := --visualize 3 --lime n_samples=300
  FPC       := 15
else  # paper
  $(NEED_CIFAR)
  TRAIN     := --arch resnet56 --dataset cifar10
  DATA_NOTE := ResNet-56 on all of CIFAR-10 ($(DATA)/cifar10.npz), the 100 epochs of its recipe
  PATH_OPTS :=
  VISUALIZE := --visualize 5
  FPC       := 15
endif

all: $(OUT)/report/index.html $(OUT)/summary.md

# ---- the dense model, 10 % of its training split held out for validation (the selection uses it)

$(OUT)/dense.safetensors: | $(OUT)
	$(INTERP) train $(TRAIN) --data-dir $(DATA) --val-split 0.1 --device $(DEVICE) --force --out $@

# ---- the regularisation path; the paper's selection, with the feature pictures

$(OUT)/sparse/sparse.safetensors: $(OUT)/dense.safetensors | $(OUT)/tables
	INTERP_PROGRESS=0 $(INTERP) sparsify $< --data-dir $(DATA) $(PATH_OPTS) --select absolute:5 $(VISUALIZE) --device $(DEVICE) \
		--force -o $(@D) $(call TABLE,$(OUT)/tables/sparse.txt)

# ---- the same path, the best layer with at most FPC features per class (after the first: the features
#      are extracted once and cached beside the checkpoint)

$(OUT)/sparse-fpc/sparse.safetensors: $(OUT)/dense.safetensors | $(OUT)/tables $(OUT)/sparse/sparse.safetensors
	INTERP_PROGRESS=0 $(INTERP) sparsify $< --data-dir $(DATA) $(PATH_OPTS) --select features-per-class:$(FPC) --device $(DEVICE) \
		--force -o $(@D) $(call TABLE,$(OUT)/tables/sparse-fpc.txt)

# ---- dense against sparse on the same test images: accuracy, per class, confusion matrix

$(OUT)/tables/eval-dense.txt: $(OUT)/dense.safetensors | $(OUT)/tables
	$(INTERP) eval $< --data-dir $(DATA) --device $(DEVICE) > $@.tmp && mv $@.tmp $@

$(OUT)/tables/eval-sparse.txt: $(OUT)/sparse/sparse.safetensors | $(OUT)/tables
	$(INTERP) eval $< --data-dir $(DATA) --device $(DEVICE) > $@.tmp && mv $@.tmp $@

# ---- the gallery and the key numbers (common.mk's targets)

TITLE   := Sparse decision layer
NOTE    := Model: $(DATA_NOTE).
OUTPUTS := $(OUT)/sparse/sparse.safetensors $(OUT)/sparse-fpc/sparse.safetensors $(OUT)/tables/eval-dense.txt \
	$(OUT)/tables/eval-sparse.txt
SUMMARY  = $(call SECTION,Selected: the sparsest layer within 5 points of the best (interp sparsify),$(OUT)/tables/sparse.txt) \
	$(call SECTION,Selected: at most $(FPC) features per class (interp sparsify),$(OUT)/tables/sparse-fpc.txt) \
	$(call SECTION,Dense model: interp eval,$(OUT)/tables/eval-dense.txt) \
	$(call SECTION,Sparse model (absolute:5): interp eval,$(OUT)/tables/eval-sparse.txt)
