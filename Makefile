# svgen: file-based pipeline. Each artifact depends on its inputs, so
#   make preprocess train-image invert train-motion animate VIDEO=talk.mp4 PHOTO=me.jpg
# works exactly as typed; `make help` lists every variable, its default and what that costs.
# GENERATOR=ffhq.pkl (or a rosinality / svgen .pt) is converted once into WORK and replaces train-image.
# The first target that needs Python creates .venv (torch==2.13.0 first, then the package).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SVGEN  := $(VENV)/bin/svgen
STAMP  := $(VENV)/.svgen-installed

WORK   ?= work
VIDEO  ?=
PHOTO  ?=
PRESET ?= tiny
DEVICE ?= auto
SEED   ?= 0
SIZE   ?= 64
SPACE  ?= w+
MODEL  ?= gru
FRAMES ?= 250
FPS    ?= 25
# Optional budget knobs (empty = the command's own default)
IMAGE_KIMG     ?=
IMAGE_INIT     ?=
ENCODER_KIMG   ?=
ENCODER_W_KIMG ?=
MOTION_EPOCHS  ?=
STYLEINV_STEPS ?=
STYLEINV_LR    ?=
# invert's latent refinement after the encoder: steps per chunk, peak lr, MS-SSIM weight (0 = L2 only)
REFINE_STEPS   ?=
REFINE_LR      ?=
REFINE_MSSSIM  ?=
PYTEST_ARGS    ?=
# make test's pytest-xdist workers, one thread each (a test file stays in one worker); 1 = one process
TEST_JOBS      ?= 2
DEMO           ?= demo
# make demo trains its two motion models side by side, one thread each (1 = one after the other)
DEMO_JOBS      ?= 2
# Bring your own generator: an NVIDIA .pkl, rosinality .pt or svgen generator.pt, converted once into
# WORK/pretrained_<stem>/generator.pt and used instead of training one (train-image is skipped)
GENERATOR      ?=
# preprocess processes (empty = 1; same dataset with any number)
WORKERS        ?=

opt = $(if $(2),$(1) $(2))
# the demo's budget (svgen.demo.layout.make_vars), for a first run on your own video
FIRST_HOUR := SIZE=64 IMAGE_KIMG=14.0 ENCODER_KIMG=3.0 ENCODER_W_KIMG=1.0 REFINE_STEPS=100 REFINE_LR=0.1 REFINE_MSSSIM=0 MOTION_EPOCHS=4000 STYLEINV_STEPS=600 STYLEINV_LR=0.001 FRAMES=250 FPS=25

ALIGNED   := $(WORK)/aligned.zip
# the generator every later step uses: trained by train-image, or converted from GENERATOR=
G_PT := $(if $(GENERATOR),$(WORK)/pretrained_$(basename $(notdir $(GENERATOR)))/generator.pt,$(WORK)/image/generator.pt)
ENCODER   := $(WORK)/encoder/encoder.pt
W_ENCODER := $(WORK)/encoder_w/encoder.pt
LATENTS   := $(WORK)/latents.h5
# MODEL=gru (default) or MODEL=styleinv; StyleInV starts from a W encoder
MOTION    := $(WORK)/motion_$(MODEL)/motion.pt
MOTION_ENCODER := $(if $(filter styleinv,$(MODEL)),$(W_ENCODER),$(ENCODER))
MOTION_LENGTH  := $(if $(filter styleinv,$(MODEL)),$(call opt,--steps,$(STYLEINV_STEPS)) $(call opt,--lr,$(STYLEINV_LR)),$(call opt,--epochs,$(MOTION_EPOCHS)))
# one animation per photo and model: work/animation_<photo stem>_<model>.mp4 (svgen.demo.layout.animation_path)
ANIMATION := $(WORK)/animation_$(basename $(notdir $(PHOTO)))_$(MODEL).mp4

.PHONY: all install preprocess train-image train-encoder invert train-motion animate demo demo-motion-gru \
	demo-motion-styleinv test bench clean-venv help \
	cuda-check gpu-check
.DEFAULT_GOAL := help

help:
	@echo "make demo          the whole pipeline on the embedded input (CPU, tiny preset, ~20 min with the install)"
	@echo "make test          the test suite"
	@echo "make bench         benchmarks/ (JSON figures)"
	@echo "make install       create $(VENV) (torch==2.13.0 first, then svgen)"
	@echo "make cuda-check    compile and bind the CUDA ops without a GPU (.venv-cuda: CUDA torch, ~1.4 GB download)"
	@echo "make gpu-check     on a GPU machine: gpu tests, CUDA/reference parity and speed, JSON of figures"
	@echo "Your own video, step by step (each target makes what it needs first):"
	@echo "  make preprocess train-image train-encoder invert train-motion animate VIDEO=talk.mp4 PHOTO=me.jpg"
	@echo "  With a pretrained generator (no train-image): make invert train-motion animate GENERATOR=ffhq.pkl VIDEO=... PHOTO=..."
	@echo "  Budget: the defaults below are full-length runs (hours to days on 2 CPU cores); for a first hour add the"
	@echo "  demo's budget: $(FIRST_HOUR)   (README: 'Your first hour')"
	@echo ""
	@echo "Variables (current value; what the default costs):"
	@echo "  VIDEO=$(VIDEO)   talking-head video for preprocess (required there)"
	@echo "  PHOTO=$(PHOTO)   identity photo for animate; output WORK/animation_<photo stem>_<MODEL>.mp4"
	@echo "  WORK=$(WORK)   folder of every artifact (aligned.zip, image/, encoder/, latents.h5, motion_*/)"
	@echo "  WORKERS=$(WORKERS)   preprocess processes, over videos and a long video's chunks; empty = 1 (same result)"
	@echo "  SIZE=$(SIZE)   aligned crop size in px; 64 suits the tiny preset on a CPU (paper256: 43 CPU-s a step)"
	@echo "  PRESET=$(PRESET)   stage-1 network preset (tiny | paper256 | stylegan2 | auto)"
	@echo "  GENERATOR=$(GENERATOR)   your own generator (NVIDIA .pkl, rosinality .pt, svgen .pt): converted once to"
	@echo "      WORK/pretrained_<stem>/generator.pt (seconds) and used instead of train-image (skipped); empty = train one"
	@echo "  IMAGE_KIMG=$(IMAGE_KIMG)   stage-1 length in kimg; empty = 200 for tiny (50 000 steps at batch 4; ~3 h on 2 CPU cores: 14 kimg took 13 min), demo 14"
	@echo "  IMAGE_INIT=$(IMAGE_INIT)   stage 1 starts from this generator's weights and preset (train-image --init; PRESET is then unused)"
	@echo "  ENCODER_KIMG=$(ENCODER_KIMG)   W+ encoder length in kimg; empty = 16 for tiny (1000 steps), demo 3"
	@echo "  ENCODER_W_KIMG=$(ENCODER_W_KIMG)   W encoder (MODEL=styleinv) in kimg; empty = 16 for tiny, demo 1"
	@echo "  SPACE=$(SPACE)   encoder latent space for invert (w+ | w)"
	@echo "  REFINE_STEPS=$(REFINE_STEPS) REFINE_LR=$(REFINE_LR) REFINE_MSSSIM=$(REFINE_MSSSIM)   invert's refinement of the"
	@echo "      encoder's codes; empty = none (0.02, 0.5); demo 100 steps at 0.1, L2 only (~1 min for 150 frames at 64 px):"
	@echo "      the encoder alone keeps about a third of the mouth's motion, this recovers about three quarters"
	@echo "  MODEL=$(MODEL)   motion model (gru | styleinv)"
	@echo "  MOTION_EPOCHS=$(MOTION_EPOCHS)   GRU epochs; empty = 350 (~50 min for a 10-min clip on CPU), demo 4000"
	@echo "  STYLEINV_STEPS=$(STYLEINV_STEPS)   StyleInV iterations; empty = 20 000 (0.13 s each at 32 px: ~45 min on CPU), demo 600"
	@echo "  STYLEINV_LR=$(STYLEINV_LR)   StyleInV's learning rate (SI); empty = 1e-4 (the paper's), demo 1e-3 (600 steps at 1e-4 learn little of the mouth)"
	@echo "  FRAMES=$(FRAMES)   frames animate writes"
	@echo "  FPS=$(FPS)   frame rate of the animation"
	@echo "  DEVICE=$(DEVICE)   auto | cpu | cuda"
	@echo "  SEED=$(SEED)   random seed of every step"
	@echo "  DEMO=$(DEMO)   folder of make demo"
	@echo "  DEMO_JOBS=$(DEMO_JOBS)   make demo's motion models side by side, one thread each (1 = one after the other)"
	@echo "  PYTEST_ARGS=$(PYTEST_ARGS)   extra arguments of make test"
	@echo "  TEST_JOBS=$(TEST_JOBS)   make test's worker processes (pytest-xdist, one thread each; 1 = a single process)"
	@echo "  PYTHON=$(PYTHON)   interpreter that creates the venv; VENV=$(VENV)   the venv folder"
	@echo "  CUDA_VENV=$(CUDA_VENV)   venv of make cuda-check / gpu-check (CUDA torch, 4.7 GB)"
	@echo "  CUDA_WHEELS=$(CUDA_WHEELS)   PyPI torch wheels downloaded once (2.6 GB)"
	@echo "  CUDA_HOME_DIR=$(CUDA_HOME_DIR)   CUDA toolkit with nvcc; CUDA_ARCHS=$(CUDA_ARCHS)   architectures built"

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

preprocess: $(ALIGNED)
$(ALIGNED): $(STAMP) $(VIDEO)
	@test -n "$(VIDEO)" || { echo "make preprocess needs VIDEO=path/to/video.mp4" >&2; exit 2; }
	$(SVGEN) preprocess $(VIDEO) --out $@ --size $(SIZE) --seed $(SEED) $(call opt,--workers,$(WORKERS))

ifeq ($(GENERATOR),)
train-image: $(G_PT)
$(G_PT): $(ALIGNED) $(IMAGE_INIT)
	$(SVGEN) train-image --data $< --out $(WORK)/image $(if $(IMAGE_INIT),,--preset $(PRESET)) --device $(DEVICE) \
		--seed $(SEED) $(call opt,--kimg,$(IMAGE_KIMG)) \
		$(if $(wildcard $(WORK)/image/checkpoints/latest.pt),--resume,$(call opt,--init,$(IMAGE_INIT)))
else
train-image: $(G_PT)
	@echo "train-image skipped: GENERATOR=$(GENERATOR) is used, converted to $(G_PT)"
$(G_PT): $(GENERATOR) | $(STAMP)
	$(SVGEN) convert $(GENERATOR) --out $@
endif

train-encoder: $(ENCODER)
$(ENCODER): $(G_PT) $(ALIGNED)
	$(SVGEN) train-encoder --generator $(G_PT) --data $(ALIGNED) --space $(SPACE) --out $(WORK)/encoder \
		--device $(DEVICE) --seed $(SEED) $(call opt,--kimg,$(ENCODER_KIMG)) \
		$(if $(wildcard $(WORK)/encoder/checkpoints/latest.pt),--resume)

$(W_ENCODER): $(G_PT) $(ALIGNED)
	$(SVGEN) train-encoder --generator $(G_PT) --data $(ALIGNED) --space w --out $(WORK)/encoder_w \
		--device $(DEVICE) --seed $(SEED) $(call opt,--kimg,$(ENCODER_W_KIMG)) \
		$(if $(wildcard $(WORK)/encoder_w/checkpoints/latest.pt),--resume)

invert: $(LATENTS)
$(LATENTS): $(ENCODER) $(G_PT) $(ALIGNED)
	$(SVGEN) invert --generator $(G_PT) --encoder $(ENCODER) --data $(ALIGNED) --out $@ \
		--device $(DEVICE) --seed $(SEED) $(call opt,--refine-steps,$(REFINE_STEPS)) \
		$(call opt,--refine-lr,$(REFINE_LR)) $(call opt,--refine-msssim,$(REFINE_MSSSIM)) \
		$(if $(wildcard $@.partial),--resume)

train-motion: $(MOTION)
$(MOTION): $(LATENTS) $(G_PT) $(MOTION_ENCODER)
	$(SVGEN) train-motion --latents $(LATENTS) --model $(MODEL) --generator $(G_PT) --encoder $(MOTION_ENCODER) \
		$(if $(filter styleinv,$(MODEL)),--data $(ALIGNED)) --out $(WORK)/motion_$(MODEL) --device $(DEVICE) --seed $(SEED) $(MOTION_LENGTH) \
		$(if $(wildcard $(WORK)/motion_$(MODEL)/checkpoints/latest.pt),--resume)

animate: $(ANIMATION)
$(ANIMATION): $(MOTION) $(G_PT) $(MOTION_ENCODER) $(PHOTO)
	@test -n "$(PHOTO)" || { echo "make animate needs PHOTO=path/to/photo.jpg" >&2; exit 2; }
	$(SVGEN) animate --identity $(PHOTO) --motion $(MOTION) --generator $(G_PT) --encoder $(MOTION_ENCODER) \
		--frames $(FRAMES) --fps $(FPS) --seed $(SEED) --device $(DEVICE) --out $@

# The demo: embedded input (or VIDEO=/PHOTO=), then the user's own targets with the demo budget
# (printed by `svgen demo --print-make-vars` from svgen.demo.layout.DemoConfig), then the page.
DEMO_SET = WORK=$(DEMO) VIDEO=$(DEMO)/input/video.mp4 PHOTO=$(DEMO)/input/identity.png
SIDE_BY_SIDE = $(filter-out 0 1,$(DEMO_JOBS))
demo: $(STAMP)
	$(SVGEN) demo --stage input --out $(DEMO) $(call opt,--video,$(VIDEO)) $(call opt,--photo,$(PHOTO)) --seed $(SEED)
	$(MAKE) --no-print-directory preprocess train-image train-encoder invert $(DEMO)/encoder_w/encoder.pt $(DEMO_SET) \
		$$($(SVGEN) demo --print-make-vars)
	$(MAKE) --no-print-directory -j$(DEMO_JOBS) demo-motion-gru demo-motion-styleinv
	$(SVGEN) demo --stage report --out $(DEMO) --device $(DEVICE) --seed $(SEED)

# Each motion model and its animation (StyleInV's W encoder is trained before, on every core). With
# DEMO_JOBS=2 the two run side by side, one thread each, StyleInV's output going to a log: 2 cores do the
# pair in about 5 instead of 7.5 min (the GRU ran 1.17x longer on one thread, StyleInV 1.7x).
demo-motion-gru demo-motion-styleinv: demo-motion-%: $(STAMP)
	@mkdir -p $(DEMO)/logs
	$(if $(and $(SIDE_BY_SIDE),$(filter styleinv,$*)),@echo "[demo] StyleInV trains beside the GRU (one core each): its output goes to $(DEMO)/logs/motion_styleinv.log")
	$(if $(SIDE_BY_SIDE),OMP_NUM_THREADS=1) $(MAKE) --no-print-directory train-motion animate $(DEMO_SET) MODEL=$* \
		$$($(SVGEN) demo --print-make-vars) $(if $(and $(SIDE_BY_SIDE),$(filter styleinv,$*)),\
		> $(DEMO)/logs/motion_$*.log 2>&1 || { tail -n 3 $(DEMO)/logs/motion_$*.log >&2; exit 1; })

test: $(STAMP)
	$(PY) -m pytest $(if $(filter-out 0 1,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadfile) $(PYTEST_ARGS)

bench: $(STAMP)
	@for b in $(filter-out benchmarks/gpu_check.py,$(wildcard benchmarks/*.py)); do echo "== $$b" >&2; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV) $(CUDA_VENV)

# -- the CUDA path --------------------------------------------------------------------------------
# .venv-cuda holds PyPI's torch==2.13.0 (the CUDA 13.0 build). This machine's pip configuration points
# at a local CPU wheel, so torch is fetched with pip's configuration and find-links set aside, into a
# wheel folder outside the checkout (~1.4 GB, downloaded once per machine: CI's fresh clones reuse it);
# the package and its dependencies follow with torch pinned, and the venv refuses to finish without CUDA.
CUDA_VENV  ?= .venv-cuda
CUDA_PY    := $(CUDA_VENV)/bin/python
CUDA_STAMP := $(CUDA_VENV)/.svgen-installed
CUDA_WHEELS   ?= $(HOME)/.cache/svgen/wheels-torch-2.13.0-pypi
CUDA_HOME_DIR ?= /usr/local/cuda
CUDA_ARCHS    ?= 8.0;8.6;9.0
PIP_PYPI := env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_NO_INDEX \
	PIP_CONFIG_FILE=/dev/null

$(CUDA_STAMP): pyproject.toml
	test -x $(CUDA_PY) || $(PYTHON) -m venv $(CUDA_VENV)
	test -f $(CUDA_WHEELS)/.complete || { $(PIP_PYPI) $(CUDA_PY) -m pip download -q -d $(CUDA_WHEELS) torch==2.13.0 \
		&& touch $(CUDA_WHEELS)/.complete; }
	$(PIP_PYPI) $(CUDA_PY) -m pip install -q --no-index --find-links $(CUDA_WHEELS) torch==2.13.0
	echo "torch==2.13.0" > $(CUDA_VENV)/torch-pin.txt
	$(CUDA_PY) -m pip install -q -c $(CUDA_VENV)/torch-pin.txt --no-deps -e .
	$(CUDA_PY) -m pip install -q -c $(CUDA_VENV)/torch-pin.txt numpy ninja
	$(CUDA_PY) -c "import sys, torch; sys.exit(0 if torch.version.cuda else 'torch in $(CUDA_VENV) is not a CUDA build: ' + torch.__version__)"
	touch $(CUDA_STAMP)

# cuda-check needs only torch, numpy and ninja; gpu-check runs the whole package and its tests.
CUDA_FULL_STAMP := $(CUDA_VENV)/.svgen-deps-installed
$(CUDA_FULL_STAMP): $(CUDA_STAMP)
	$(CUDA_PY) -m pip install -q -c $(CUDA_VENV)/torch-pin.txt -e '.[dev]'
	$(CUDA_PY) -c "import sys, torch; sys.exit(0 if torch.version.cuda else 'installing the dependencies replaced the CUDA torch: ' + torch.__version__)"
	touch $(CUDA_FULL_STAMP)

cuda-check: $(CUDA_STAMP)
	CUDA_HOME=$(CUDA_HOME_DIR) TORCH_CUDA_ARCH_LIST='$(CUDA_ARCHS)' $(CUDA_PY) -m svgen.ops.cuda_check

gpu-check: $(CUDA_FULL_STAMP)
	$(CUDA_PY) benchmarks/gpu_check.py --out $(or $(GPU_CHECK_OUT),gpu_check.json)
