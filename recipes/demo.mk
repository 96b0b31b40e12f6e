# The README's quick start as a Makefile: train a small model on the embedded `digits`
# dataset, evaluate it, record its metadata and explain a few test images.  Every target is one `interp` call;
# --force: an out-of-date explanation folder is replaced as a whole.
#
#   make -f recipes/demo.mk INTERP=interp OUT=out/demo

INTERP ?= interp
OUT    ?= out/demo
DEVICE ?= auto

all: $(OUT)/eval.json $(OUT)/info.json $(OUT)/occlude/attributions.npz $(OUT)/explain/grid.png

$(OUT):
	mkdir -p $@

$(OUT)/lenet.safetensors: | $(OUT)
	$(INTERP) train --arch lenet --dataset digits --epochs 20 --snapshot-every 20 --val-split 0.1 \
		--device $(DEVICE) --out $@

$(OUT)/eval.json: $(OUT)/lenet.safetensors
	$(INTERP) eval $< --device $(DEVICE) --json > $@.tmp && mv $@.tmp $@
	$(INTERP) eval $< --device $(DEVICE)

$(OUT)/info.json: $(OUT)/lenet.safetensors
	$(INTERP) info $< --json > $@.tmp && mv $@.tmp $@

$(OUT)/occlude/attributions.npz: $(OUT)/lenet.safetensors
	$(INTERP) occlude $< --indices 0:6 --score gds --window 2 --stride 1 --views 8 --k 2 \
		--device $(DEVICE) --force --out $(OUT)/occlude

$(OUT)/explain/grid.png: $(OUT)/lenet.safetensors
	$(INTERP) explain $< --indices 0:6 --method grad --method intgrad --method smoothgrad --method gradcam \
		--device $(DEVICE) --force --out $(OUT)/explain
.PHONY: all
