# B-cos study (../shared/seeds/002_*.txt): ResNet-56 against B-cos ResNet-56, with the bias
# ablation (ResNet-56 without additive biases, the note's benchmark, against ResNet-56 with them),
# trained on several cross-validation folds and compared with `interp compare` (mean ± sd,
# Welch and paired tests, violin plot); the same test images explained by bcos, gradcam, intgrad,
# deeplift, lime and grad; the 3x3 grid pointing game of every method.  Every target is one
# `interp` call; --force: a folder that is made again is replaced as a whole.
#
#   make -f recipes/bcos-cifar10.mk INTERP=.venv/bin/interp                # BUDGET=small, out/bcos-cifar10/
#   make -f recipes/bcos-cifar10.mk BUDGET=paper DEVICE=cuda               # the papers' epochs and counts
#
# Budgets (BUDGET=...):
#   tiny   about a minute: ResNet-56s on the embedded 8x8 digits, 2 of 3 folds, 5 epochs (ResNet: SGD at
#          lr 0.02, 0.1 does not learn the digits in so few steps), 2 images, two 2x2 mosaics (a 3x3
#          mosaic needs all ten classes correctly classified; tests/test_recipes.py)
#   small  (default) about 11 minutes on 2 CPU cores: the depth-20 twins (ResNet-20, B-cos ResNet-20;
#          ResNet-56 is 3x slower and learns nothing in the few steps a small budget affords) on 5000
#          training and 1000 test images of CIFAR-10 from $(DATA)/cifar10.npz, 2 of 5 folds, 5 epochs,
#          the B-cos net with bias-free uncentred BatchNorm (norm=bnu, a config of the B-cos v2 norm
#          ablation: without a norm it reaches ~24 % here and never predicts four classes, too few for
#          a 3x3 mosaic), 8 images, 8 mosaics of shrunk images (--rescale), fewer LIME samples and
#          integration steps; without cifar10.npz, the embedded digits instead (summary.md says which)
#   paper  a GPU: ResNet-56s on all of CIFAR-10, 5 folds, the recipes' 100 epochs (ResNet-56: SGD 0.1,
#          batch 128; B-cos: Adam 1e-3, batch 64, BCE), 64 images, 500 mosaics of full-size images
#          (the B-cos configs' 500_3x3), the B-cos CLI's smoothing 15
#
# Writes $(OUT)/runs/ (checkpoints and training logs), compare/ (accuracy per arch and fold),
# explain-bcos/, explain-resnet/ (maps of the same images), pointing-bcos/, pointing-resnet/,
# tables/ (the commands' tables), report/index.html and summary.md.

OUT ?= out/bcos-cifar10
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

ifeq ($(BUDGET),tiny)
  DEPTH       := 56
  DATASET     := --dataset digits
  DATA_NOTE   := digits (embedded, 8x8; the tiny budget never reads real data)
  FOLDS       := 3
  RUN_FOLDS   := 0 1
  STD_TRAIN   := --epochs 5 --lr 0.02
  BCOS_TRAIN  := --epochs 5
  INDICES     := 0:2
  PG          := --grid 2 --n 2 --conf-thresh 0
  PARAMS      := -p lime.n_samples=40 -p intgrad.steps=8 -p deeplift.steps=4
else ifeq ($(BUDGET),small)
  DEPTH       := 20
  ifneq ($(HAVE_CIFAR),)
    DATASET   := --dataset cifar10 --limit-train 5000 --limit-test 1000
    DATA_NOTE := CIFAR-10 ($(DATA)/cifar10.npz), 5000 training and 1000 test images; B-cos with norm=bnu
    STD_TRAIN := --epochs 5
    BCOS_TRAIN:= --epochs 5 --arch-arg norm=bnu
    PG        := --grid 3 --n 8 --conf-thresh 0 --rescale
  else
    DATASET   := --dataset digits
    DATA_NOTE := digits (embedded, 8x8): $(DATA)/cifar10.npz was not found
    STD_TRAIN := --epochs 10 --lr 0.02
    BCOS_TRAIN:= --epochs 10
    PG        := --grid 3 --n 8 --conf-thresh 0
  endif
  FOLDS       := 5
  RUN_FOLDS   := 0 1
  INDICES     := 0:8
  PARAMS      := -p lime.n_samples=200 -p intgrad.steps=16 -p deeplift.steps=8
else  # paper
  $(NEED_CIFAR)
  DEPTH       := 56
  DATASET     := --dataset cifar10
  DATA_NOTE   := CIFAR-10 ($(DATA)/cifar10.npz), all 50000 training and 10000 test images
  FOLDS       := 5
  RUN_FOLDS   := 0 1 2 3 4
  STD_TRAIN   :=
  BCOS_TRAIN  :=
  INDICES     := 0:64
  PG          := --grid 3 --n 500 --smooth 15
  PARAMS      :=
endif

STD_ARCH     := resnet$(DEPTH)
BCOS_ARCH    := bcos-resnet$(DEPTH)
METHODS_STD  := grad gradcam intgrad deeplift lime
METHODS_BCOS := bcos $(METHODS_STD)
comma := ,
space := $(subst ,, )

STD      := $(RUN_FOLDS:%=$(OUT)/runs/$(STD_ARCH)-f%.safetensors)
STD_BIAS := $(RUN_FOLDS:%=$(OUT)/runs/$(STD_ARCH)-bias-f%.safetensors)
BCOS     := $(RUN_FOLDS:%=$(OUT)/runs/$(BCOS_ARCH)-f%.safetensors)

all: $(OUT)/report/index.html $(OUT)/summary.md

$(OUT)/runs:
	mkdir -p $@

# ---- training: fold F of FOLDS stratified folds held out for validation, the same split for every arch

$(OUT)/runs/$(STD_ARCH)-f%.safetensors: | $(OUT)/runs
	$(INTERP) train --arch $(STD_ARCH) --no-bias $(DATASET) --data-dir $(DATA) --folds $(FOLDS) --fold $* \
		$(STD_TRAIN) --device $(DEVICE) --force --out $@

$(OUT)/runs/$(STD_ARCH)-bias-f%.safetensors: | $(OUT)/runs
	$(INTERP) train --arch $(STD_ARCH) --bias $(DATASET) --data-dir $(DATA) --folds $(FOLDS) --fold $* \
		$(STD_TRAIN) --device $(DEVICE) --force --out $@

$(OUT)/runs/$(BCOS_ARCH)-f%.safetensors: | $(OUT)/runs
	$(INTERP) train --arch $(BCOS_ARCH) $(DATASET) --data-dir $(DATA) --folds $(FOLDS) --fold $* \
		$(BCOS_TRAIN) --device $(DEVICE) --force --out $@

# ---- test and validation accuracy over folds: mean ± sd, Welch and paired (by fold) tests

$(OUT)/compare/compare.json: $(STD) $(STD_BIAS) $(BCOS) | $(OUT)/tables
	INTERP_PROGRESS=0 $(INTERP) compare --metric test_acc,val_acc --group '$(STD_ARCH)=$(OUT)/runs/$(STD_ARCH)-f*.safetensors' \
		--group '$(STD_ARCH)-bias=$(OUT)/runs/$(STD_ARCH)-bias-f*.safetensors' \
		--group '$(BCOS_ARCH)=$(OUT)/runs/$(BCOS_ARCH)-f*.safetensors' \
		--force -o $(@D) $(call TABLE,$(OUT)/tables/compare.txt)

# ---- the same test images explained by every method (fold 0 of each model)

$(OUT)/explain-bcos/attributions.npz: $(OUT)/runs/$(BCOS_ARCH)-f0.safetensors
	$(INTERP) explain $< --data-dir $(DATA) --indices $(INDICES) $(addprefix -m ,$(METHODS_BCOS)) $(PARAMS) \
		--device $(DEVICE) --force -o $(@D)

$(OUT)/explain-resnet/attributions.npz: $(OUT)/runs/$(STD_ARCH)-f0.safetensors
	$(INTERP) explain $< --data-dir $(DATA) --indices $(INDICES) $(addprefix -m ,$(METHODS_STD)) $(PARAMS) \
		--device $(DEVICE) --force -o $(@D)

# ---- the 3x3 grid pointing game, every method

$(OUT)/pointing-bcos/summary.json: $(OUT)/runs/$(BCOS_ARCH)-f0.safetensors | $(OUT)/tables
	INTERP_PROGRESS=0 $(INTERP) consistency $< --data-dir $(DATA) --pointing-game $(PG) \
		--methods $(subst $(space),$(comma),$(METHODS_BCOS)) $(PARAMS) --device $(DEVICE) --force -o $(@D) \
		$(call TABLE,$(OUT)/tables/pointing-bcos.txt)

$(OUT)/pointing-resnet/summary.json: $(OUT)/runs/$(STD_ARCH)-f0.safetensors | $(OUT)/tables
	INTERP_PROGRESS=0 $(INTERP) consistency $< --data-dir $(DATA) --pointing-game $(PG) \
		--methods $(subst $(space),$(comma),$(METHODS_STD)) $(PARAMS) --device $(DEVICE) --force -o $(@D) \
		$(call TABLE,$(OUT)/tables/pointing-resnet.txt)

# ---- the gallery and the key numbers (common.mk's targets)

TITLE   := B-cos ResNet-$(DEPTH) vs ResNet-$(DEPTH)
NOTE    := Data: $(DATA_NOTE). Folds: $(RUN_FOLDS) of $(FOLDS).
OUTPUTS := $(OUT)/compare/compare.json $(OUT)/explain-bcos/attributions.npz $(OUT)/explain-resnet/attributions.npz \
	$(OUT)/pointing-bcos/summary.json $(OUT)/pointing-resnet/summary.json
SUMMARY  = $(call SECTION,Accuracy over folds: interp compare,$(OUT)/tables/compare.txt) \
	$(call SECTION,Grid pointing game $(PG): $(BCOS_ARCH) fold 0,$(OUT)/tables/pointing-bcos.txt) \
	$(call SECTION,Grid pointing game $(PG): $(STD_ARCH) fold 0,$(OUT)/tables/pointing-resnet.txt)
