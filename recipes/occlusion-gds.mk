# Occlusion in representation space (../shared/seeds/001_*.txt, METHODS.md 2-3): the same test images
# explained by classic occlusion (the target's logit drop), RISE (random masks weighted by the
# target's probability), ROSA (occlusion scored by the distance of the penultimate representation,
# class-agnostic) and ROSA-GDS (the same distance inside the generalized difference subspace of the
# note's four augmentation sets: weak and strong views of the image, weak and strong views of
# noise); then the maps scored by the note's consistency, the minimal size and RISE's deletion /
# insertion, with per-method statistics and paired tests (`interp consistency`), once on the
# probability vector and once on the representation (fair to the class-agnostic methods, as the note
# argues).  Every target is one `interp` call; --force: a folder that is made again is replaced as
# a whole.
#
#   make -f recipes/occlusion-gds.mk INTERP=.venv/bin/interp               # BUDGET=small, out/occlusion-gds/
#   make -f recipes/occlusion-gds.mk BUDGET=paper DEVICE=cuda
#
# Budgets (BUDGET=...):
#   tiny   seconds: LeNet on the embedded 8x8 digits, 5 epochs, 4 images, 2x2 windows, 8 views of
#          dimension 2, 200 RISE masks (tests/test_recipes.py)
#   small  (default) about 3 minutes on 2 CPU cores: ResNet-20 on 10000 training and 1000 test images
#          of CIFAR-10 from $(DATA)/cifar10.npz, 5 epochs, 32 images, 8x8 windows at stride 4, 16 views
#          of dimension 4, 2000 RISE masks; without cifar10.npz, LeNet on the digits as in tiny with
#          32 images (summary.md says which)
#   paper  a GPU: ResNet-56 on all of CIFAR-10 with the 100 epochs of its recipe (He et al.), 250 images,
#          RISE's 6000 masks (s 8, p 0.1; Petsiuk et al. 2018), 16 views of dimension 4
#
# Writes $(OUT)/model.safetensors (and its training log), maps/ (the four maps, grid.png),
# consistency-prob/, consistency-repr/ (scores, curves, statistics), tables/, report/index.html and
# summary.md.

OUT ?= out/occlusion-gds
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

DIGITS     := --arch lenet --dataset digits --epochs 5
DIGITS_OCC := -p window=2 -p stride=1
DIGITS_SUB := -p gds.views=8 -p gds.k=2

ifeq ($(BUDGET),tiny)
  TRAIN     := $(DIGITS)
  DATA_NOTE := LeNet on the embedded 8x8 digits (the tiny budget never reads real data)
  IMAGES    := 0:4
  WINDOW    := $(DIGITS_OCC)
  SUBSPACE  := $(DIGITS_SUB)
  RISE      := -p rise.n_masks=200 -p rise.s=4
else ifeq ($(BUDGET),small)
  ifneq ($(HAVE_CIFAR),)
    TRAIN     := --arch resnet20 --dataset cifar10 --limit-train 10000 --limit-test 1000 --epochs 5
    DATA_NOTE := ResNet-20 on CIFAR-10 ($(DATA)/cifar10.npz), 10000 training and 1000 test images, 5 epochs
    WINDOW    := -p window=8 -p stride=4
    SUBSPACE  := -p gds.views=16 -p gds.k=4
    RISE      := -p rise.n_masks=2000
  else
    TRAIN     := $(DIGITS)
    DATA_NOTE := LeNet on the embedded 8x8 digits: $(DATA)/cifar10.npz was not found
    WINDOW    := $(DIGITS_OCC)
    SUBSPACE  := $(DIGITS_SUB)
    RISE      := -p rise.n_masks=2000 -p rise.s=4
  endif
  IMAGES    := 0:32
else  # paper
  $(NEED_CIFAR)
  TRAIN     := --arch resnet56 --dataset cifar10
  DATA_NOTE := ResNet-56 on all of CIFAR-10 ($(DATA)/cifar10.npz), the 100 epochs of its recipe
  IMAGES    := 0:250
  WINDOW    := -p window=8 -p stride=4
  SUBSPACE  := -p gds.views=16 -p gds.k=4
  RISE      :=
endif

MAPS := $(OUT)/maps/attributions.npz

all: $(OUT)/report/index.html $(OUT)/summary.md

# ---- the model

$(OUT)/model.safetensors: | $(OUT)
	$(INTERP) train $(TRAIN) --data-dir $(DATA) --device $(DEVICE) --force --out $@

$(OUT)/tables/eval.txt: $(OUT)/model.safetensors | $(OUT)/tables
	$(INTERP) eval $< --data-dir $(DATA) --device $(DEVICE) > $@.tmp && mv $@.tmp $@

# ---- four maps of the same test images, for the predicted class (the two class-agnostic methods
#      explain the image as a whole): occlusion (sliding windows, logit drop), RISE, ROSA (sliding
#      windows, cosine distance of the penultimate representation) and ROSA-GDS (the same inside the
#      GDS of the four augmentation sets); `interp occlude --score class|repr|gds` draws the same
#      maps one score at a time

$(MAPS): $(OUT)/model.safetensors
	$(INTERP) explain $< --data-dir $(DATA) --indices $(IMAGES) -m occlusion -m rise -m rosa -m gds \
		$(WINDOW) $(SUBSPACE) $(RISE) --device $(DEVICE) --force -o $(@D)

# ---- the maps scored: consistency and minimal size on the probability vector, deletion and insertion;
#      then consistency and minimal size on the penultimate representation (class-agnostic)

$(OUT)/consistency-prob/summary.json: $(MAPS) | $(OUT)/tables
	INTERP_PROGRESS=0 $(INTERP) consistency $(OUT)/model.safetensors $(MAPS) --data-dir $(DATA) \
		--metric consistency,min-size,deletion,insertion --output prob --device $(DEVICE) --force -o $(@D) \
		$(call TABLE,$(OUT)/tables/consistency-prob.txt)

$(OUT)/consistency-repr/summary.json: $(MAPS) | $(OUT)/tables
	INTERP_PROGRESS=0 $(INTERP) consistency $(OUT)/model.safetensors $(MAPS) --data-dir $(DATA) \
		--metric consistency,min-size --output repr --device $(DEVICE) --force -o $(@D) \
		$(call TABLE,$(OUT)/tables/consistency-repr.txt)

# ---- the gallery and the key numbers (common.mk's targets)

TITLE   := Occlusion, RISE, ROSA and ROSA-GDS
NOTE    := Model: $(DATA_NOTE). Images: test $(IMAGES).
OUTPUTS := $(MAPS) $(OUT)/consistency-prob/summary.json $(OUT)/consistency-repr/summary.json $(OUT)/tables/eval.txt
SUMMARY  = $(call SECTION,The model: interp eval,$(OUT)/tables/eval.txt) \
	$(call SECTION,Fidelity on the probability vector: interp consistency,$(OUT)/tables/consistency-prob.txt) \
	$(call SECTION,Consistency and minimal size on the representation: interp consistency --output repr,$(OUT)/tables/consistency-repr.txt)
