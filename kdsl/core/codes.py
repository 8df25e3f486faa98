"""Stable diagnostic codes. A code, once published, keeps its meaning.

KD1xx syntax, KD2xx names and structure, KD3xx components and arguments, KD4xx files and
imports, KD5xx compiling against real models, KD6xx running a step, KD7xx the command line and
training. ``kdsl explain-code KD201`` prints an entry.
"""

from __future__ import annotations

from typing import Dict, NamedTuple


class Code(NamedTuple):
    title: str
    explanation: str


CODES: Dict[str, Code] = {
    # ---------------------------------------------------------------- syntax
    "KD100": Code("unexpected character", "A character that is not part of the language, such as "
                  "'@' or a single quote. Strings use double quotes."),
    "KD101": Code("bracket never closed", "An opening '(', '[' or '{' has no matching closing "
                  "bracket before the next statement or the end of the file. A statement may "
                  "continue over several lines only inside open brackets."),
    "KD102": Code("unmatched closing bracket", "A ')', ']' or '}' that closes nothing, or closes "
                  "a different kind of bracket than the one open."),
    "KD103": Code("syntax error", "The statement does not follow the grammar; the message says "
                  "what was expected at that point, in the characters you would type."),
    "KD104": Code("unterminated string", "A string starts with '\"' but the line ends before "
                  "the closing '\"'. Strings cannot span lines."),
    "KD105": Code("invalid escape", "Inside strings only \\\" \\\\ \\n and \\t are escapes."),
    "KD106": Code("misplaced train block", "'train {' must stand on its own line, its settings "
                  "one per line, and '}' close it on a line of its own."),
    "KD107": Code("statement too large", "A statement is longer than 64 KiB or nests brackets "
                  "more than 32 deep. No real spec comes near either; the limits keep checking "
                  "fast and bounded on any input."),
    "KD108": Code("too many problems", "The last line of a long list: the first 50 problems are "
                  "shown in full and this line counts the rest (past 1,000 they are only counted, "
                  "never built), so any input is answered in time and memory proportional to what "
                  "is shown. Fix the problems shown and check again."),
    # ---------------------------------------------------------------- names
    "KD201": Code("unknown record", "An expression names a record that is not declared. "
                  "Declare it with `record NAME = output of MODEL.PATH`."),
    "KD202": Code("unknown name", "An expression uses a name that is not a record, connector, "
                  "model or `batch`."),
    "KD203": Code("duplicate declaration", "A name is declared twice. Names of models, records, "
                  "connectors and losses share one namespace. To replace a declaration from an "
                  "included file, write `override` before the new one."),
    "KD204": Code("used before declaration", "A name is used on a line above its declaration. "
                  "Declarations are read top to bottom."),
    "KD205": Code("unknown model", "A record, delivery or module reference names a model that "
                  "is not declared with `student` or `teacher`."),
    "KD206": Code("override of nothing", "`override` replaces an earlier declaration of the same "
                  "name and kind (usually from an included file); there is none."),
    "KD207": Code("no student", "Every spec declares exactly one student: `student` on a line "
                  "of its own is enough."),
    "KD208": Code("more than one student", "A spec distils into one student. Use teachers (with "
                  "`trainable` for online distillation) for the other models."),
    "KD209": Code("reserved name", "The name is a keyword or has a meaning of its own "
                  "(`batch`, `true`, `false`, `none`) and cannot be declared."),
    "KD210": Code("unknown connector", "A connector is applied that is not declared with "
                  "`connector NAME = ...`."),
    "KD211": Code("invalid delivery", "A delivery copies results from the teacher's pass into "
                  "the student's pass: `deliver output of method \"pkg.mod:Class.method\" from "
                  "TEACHER to STUDENT`. Both models must be declared and differ, and the source "
                  "runs before the destination (a teacher to the student)."),
    "KD212": Code("invalid record", "The record's parts do not fit together, e.g. an input "
                  "selector on an output record or a negative invocation."),
    "KD213": Code("invalid expression", "The expression cannot be used here: a connector must be "
                  "applied to a tensor (`p1(x)`), a model is not a tensor (record its output), "
                  "`batch` needs a field (`batch.target`)."),
    "KD214": Code("invalid train setting", "A setting of the `train { }` block is unknown or "
                  "has a value of the wrong type."),
    "KD215": Code("override of a different kind", "`override` must replace a declaration of the "
                  "same kind (a loss with a loss)."),
    "KD216": Code("misplaced statement", "The statement cannot stand inside this block. A "
                  "stage holds losses, `optimize`, `freeze` and phases; a phase holds losses, "
                  "`optimize` and `freeze`; everything else (models, records, connectors, `init`, "
                  "`input`, `train`, `override`) stands at the top level, where it holds in every "
                  "stage."),
    "KD217": Code("duplicate stage or phase", "Stage names are unique in a spec; a phase's name "
                  "is unique among the phases of a step (the top-level phases and those of its "
                  "stage)."),
    "KD218": Code("invalid optimize or freeze", "`optimize` and `freeze` name models, modules of "
                  "models (`student.layer1`) and connectors that are declared above; a frozen "
                  "teacher or a connector declared `frozen` cannot be optimized; a block has at "
                  "most one `optimize` (list everything it trains in it)."),
    "KD219": Code("optimize reaches nothing", "No loss of the stage or phase depends on this "
                  "target's parameters (through its records, its connector applications, or the "
                  "input a generator makes), so optimizing it would train nothing. `detach` and "
                  "`argmax` stop gradients."),
    "KD220": Code("invalid stage or phase", "A stage runs at least 1 epoch and a phase at least "
                  "once; only one stage may leave out `epochs` (it runs the rest of the run, at least one "
                  "epoch); when every stage declares its epochs they add up to the run's (the train "
                  "block's `epochs`, or `--epochs`)."),
    "KD221": Code("frozen connector without weights", "A connector that is frozen keeps the "
                  "weights it has: load them with `from \"FILE.pt\"`, or train it in an earlier "
                  "stage and `freeze` it in the later ones. Frozen with random weights, it "
                  "would pass noise along."),
    "KD222": Code("invalid init", "`init MODULE from MODULE` copies parameters between modules "
                  "of two declared models (shapes are checked against the real models by the "
                  "model-aware check)."),
    "KD223": Code("invalid input", "`input = EXPR` makes each step's model input from "
                  "generators and functions (`input = gen(noise(100))`); it cannot read records, "
                  "connectors or batch fields, a spec has at most one, and without data the "
                  "train block gives `steps_per_epoch`."),
    "KD224": Code("model applied", "Only a generator can be applied, and only in `input = ...` "
                  "(`input = gen(noise(100))`); other models' outputs are read with records."),
    "KD225": Code("unknown connector method", "`c.method(x)` applies a method that the "
                  "connector's type declares, such as a paraphraser's `encode` and "
                  "`reconstruct`; other connectors are applied whole: `c(x)`."),
    "KD235": Code("unknown param given", "`--set NAME=VALUE` (or `params={NAME: value}`) names a "
                  "param the spec does not declare. Declare it with `param NAME = VALUE`; a "
                  "training setting such as epochs is set by its own flag (`--epochs`)."),
    "KD236": Code("malformed param value", "`--set` takes NAME=VALUE, once per param: a name, '=', "
                  "and the value as the spec would write it (`--set tau=2`, `--set name=\"x\"`)."),
    "KD237": Code("unknown search space", "`param NAME = VALUE search SPACE`: SPACE is uniform(low, "
                  "high), log_uniform(low, high), int_uniform(low, high) or choice(value, ...), with "
                  "literal arguments (no keywords)."),
    "KD238": Code("invalid search space", "The space's arguments do not describe a space: low must "
                  "be below high, a log scale needs low above 0, int_uniform takes integers, and "
                  "choice lists each value once."),
    "KD239": Code("param outside its search space", "The spec's own value of a param lies outside "
                  "the space it declares. A sweep's first trial is the spec as written, so the "
                  "value must be a point of the space."),
    "KD231": Code("model cannot generate", "`generate from MODEL(...)` completes the batch's prompts "
                  "with MODEL, which must be a causal language model (kdsl.zoo:gpt, "
                  "kdsl.hub:hf_causal_lm, kdsl.hub:hf_pretrained); a generator of inputs or an image "
                  "model cannot generate text."),
    "KD232": Code("invalid generate option", "`generate`'s options are named literals: "
                  "max_new_tokens (an integer >= 1), temperature (>= 0; 0 is greedy), top_p in (0, 1], "
                  "lmbda in [0, 1] (the fraction of steps that generate), eos and pad (token ids)."),
    "KD233": Code("second generate", "A spec generates from one model: at most one `generate` statement."),
    "KD240": Code("invalid stage batch size", "`stage NAME batch_size B` gives a stage its own "
                  "batch size, 1 to 2,147,483,647 samples per process, as the batch_size setting."),
    "KD241": Code("stage batch size unused", "A stage sets `batch_size`, but the spec's models "
                  "take their input from `input = ...`, not from data: no batch is read. The number "
                  "of generated rows is noise(...)'s."),
    "KD242": Code("share_input unused", "`share_input = true` shares a generated input "
                  "(`input = ...`) between a step's phases; a spec whose models take the data's "
                  "batch already gives every phase the same batch."),
    "KD226": Code("placement names no model", "`replicated` and `offloaded` in the train block "
                  "name the students and teachers that strategy fsdp holds whole on every process "
                  "or offloads to the CPU; each name must be a model of the spec."),
    "KD227": Code("offload of a trained model", "`offloaded` keeps a model's parameter shards on "
                  "the CPU between passes (FSDP2's CPUOffloadPolicy), which fits only a frozen "
                  "teacher; a trained model is sharded (the default) or `replicated`."),
    "KD228": Code("param record of a sharded model", "Under strategy fsdp each process holds one "
                  "shard of a sharded model's parameters, so a `param` record would read a piece "
                  "of the tensor. Hold that model whole with `replicated = [\"NAME\"]`."),
    "KD229": Code("model placed twice", "A model is in both `replicated` and `offloaded` (or "
                  "twice in one): each model has one placement."),
    "KD250": Code("record never used", "A record no loss or connector reads. It still costs a "
                  "hook on every forward pass."),
    "KD251": Code("loss uses no record", "A loss whose inputs read no record; it does not "
                  "depend on the models, so it cannot distil anything."),
    "KD252": Code("connector never used", "A declared connector that no loss applies; it would "
                  "add parameters that never train."),
    "KD253": Code("teacher never used", "No record or delivery reads this teacher; "
                  "`step()` skips its forward pass."),
    "KD254": Code("flag has no effect", "A model flag that does not apply to this role, such as "
                  "`trainable` on the student, or `train_mode` on a model that trains (the student, "
                  "a trainable teacher, a generator): only a frozen teacher runs in eval mode."),
    "KD255": Code("no loss", "The spec declares no loss, so a training step computes nothing to "
                  "minimise."),
    "KD256": Code("generator never used", "A generator that `input = ...` does not apply; it "
                  "makes nothing."),
    "KD257": Code("generator never trained", "A generator without weights (`from`) that no "
                  "`optimize` names: it would make the input from random weights."),
    "KD258": Code("teacher without weights", "A frozen teacher built from its factory with no "
                  "`from \"FILE\"` and no pretrained option (pretrained=true, weights=...): it would "
                  "teach from random weights. `kdsl train` refuses it (KD730) unless "
                  "allow_random_teacher is set (--allow-random-teacher, or in the train block)."),
    # ---------------------------------------------------------------- components
    "KD301": Code("unknown loss", "The loss is not in the registry. `kdsl list losses` shows "
                  "the catalog; plugins register more with `import \"pkg.module\"`."),
    "KD302": Code("unknown connector type", "The connector type is not in the registry. "
                  "`kdsl list connectors` shows the catalog."),
    "KD303": Code("unknown schedule", "A weight is a number or a schedule call: constant, "
                  "linear, warmup, cosine, step. `kdsl list schedules`."),
    "KD304": Code("unknown optimizer", "`kdsl list optimizers` shows the optimizers."),
    "KD305": Code("unknown argument", "A keyword argument that the component does not take."),
    "KD306": Code("too many positional arguments", "More positional arguments than the "
                  "component takes inputs (losses) or options (schedules)."),
    "KD307": Code("duplicate argument", "The same argument is given twice, by keyword or by "
                  "position and keyword."),
    "KD308": Code("missing argument", "A required input or option is not given and cannot be "
                  "inferred."),
    "KD309": Code("wrong argument type", "A literal argument does not have the type the "
                  "component declares (see `kdsl list NAME`)."),
    "KD310": Code("unknown lr schedule", "`kdsl list lr_schedules` shows the learning-rate "
                  "schedules."),
    "KD311": Code("argument is not a tensor", "A loss input or connector input must be computed "
                  "from the models or the batch (a record, a connector application, a batch "
                  "field), not a literal; an option of type module must name a module."),
    "KD312": Code("argument out of range", "A literal option has the right type but a value the "
                  "component does not allow, such as a temperature of 0, a negative margin, a "
                  "probability outside [0, 1] or a channel count below 1. The message gives the "
                  "allowed range; `kdsl list NAME` shows every option's."),
    "KD313": Code("bad model option", "An option of a kdsl model factory (`kdsl.hub:hf_pretrained`) "
                  "is not one it takes: `dtype` is float32, bfloat16, float16 or auto; `path` is a "
                  "folder or a Hugging Face model id."),
    # ---------------------------------------------------------------- files
    "KD320": Code("unknown batch transform", "The train block's batch_transform names no "
                  "transform of the catalog (`kdsl list batch-transforms`: mixup, cutmix, "
                  "mixup_cutmix, rotations)."),
    "KD321": Code("batch transform failed", "The batch transform could not transform a training "
                  "batch: batches of named fields (it takes (input, target) pairs), images that are "
                  "not square (rotations), or an unknown class count for the mixed labels "
                  "(give num_classes=...). The error names the transform where the train block sets it."),
    "KD401": Code("file not found", "A spec or an included file cannot be read. Includes are "
                  "relative to the including file."),
    "KD402": Code("include cycle", "Files include each other in a cycle."),
    "KD403": Code("malformed import path", "`import` takes a dotted Python module path such as "
                  "\"my_project.kd_parts\"."),
    "KD404": Code("import failed", "The Python module named by `import` (or by a model, method "
                  "or function reference) could not be imported."),
    "KD405": Code("malformed reference", "A reference to Python code is written "
                  "\"package.module:attribute\", e.g. \"kdsl.zoo:resnet8x4\" or "
                  "\"pkg.heads:Head.assign\"."),
    "KD406": Code("refused reference", "A model, data, method or function reference leads into a "
                  "module that runs commands, touches files or sockets, or loads code (os, "
                  "subprocess, shutil, sys, builtins, importlib, pickle, socket, ctypes and their "
                  "like; kdsl.core.resolve.REFUSED_MODULES lists them). It is refused before "
                  "anything is imported: a spec names models, data sets and functions of your own "
                  "code or of a model library."),
    # ---------------------------------------------------------------- compile
    "KD501": Code("module not found", "A module path does not name a submodule of the model. "
                  "The hint lists the closest real names from `named_modules()`."),
    "KD502": Code("parameter not found", "A `param` record does not name a parameter of the "
                  "model (`named_parameters()`)."),
    "KD503": Code("cannot resolve reference", "A method or function path does not name an "
                  "importable attribute."),
    "KD504": Code("wrong kind of callable", "`method` needs a function defined on a class "
                  "(\"pkg.mod:Class.method\"); `function` needs a module-level function."),
    "KD505": Code("shape mismatch", "The shapes recorded in the dry run do not satisfy the "
                  "loss's or connector's shape rules."),
    "KD506": Code("never ran", "The recorded module or callable did not run during the model's "
                  "forward pass, so the record would be empty."),
    "KD507": Code("model not given", "A model in the spec has no factory and was not passed to "
                  "`kdsl.compile` (or on the command line)."),
    "KD508": Code("model factory failed", "Calling the model factory raised an error, or it did "
                  "not return an nn.Module."),
    "KD509": Code("checkpoint problem", "The checkpoint is missing, unreadable, or its keys do "
                  "not match the model."),
    "KD510": Code("connector cannot be built", "Building the connector failed, or a channel "
                  "count it needs could not be inferred."),
    "KD511": Code("invocation out of range", "`call N` asks for an invocation the module did not "
                  "reach in the pass."),
    "KD512": Code("input not found", "An input selector names an input the call did not "
                  "receive."),
    "KD513": Code("loss cannot be built", "Building the loss from its options failed."),
    "KD514": Code("unexpected model", "A model passed to `kdsl.compile` is not declared in the "
                  "spec."),
    "KD515": Code("conflicting distillers", "Two distillers are active on the same models in a "
                  "way that cannot work."),
    "KD516": Code("invalid dry-run input", "The example input could not be run through a model."),
    "KD517": Code("no dry run", "Models were given but no input, so paths were resolved and shapes "
                  "were not checked: give --input-shape or --data."),
    "KD518": Code("init does not fit", "`init A from B` copies parameters and buffers by name: "
                  "both modules must have the same ones, with the same shapes."),
    "KD519": Code("function cannot be built", "Building a tensor function from its options failed."),
    "KD520": Code("target outside the models' code", "A `method` or `function` that a record or "
                  "delivery patches must lie in the models' own code (the packages that define "
                  "the models' classes, such as torch or your model package) or in kdsl; anything "
                  "else, such as \"os:system\", is reached only when the spec imports its module "
                  "(`import \"os\"`). A spec is code, like a Python config: the import says so."),
    "KD530": Code("checkpoint not found", "`kdsl check` and `kdsl explain` do not load weights "
                  "(shapes do not need them), but they check that each `from \"FILE\"` exists: "
                  "this one does not. `kdsl train` and `kdsl.compile` need it; paths in a spec are "
                  "relative to the spec file."),
    "KD531": Code("no input shape", "A connector's size is inferred from its input's shape, and "
                  "kdsl found no shape to dry-run on: the spec's data reader declares none, the "
                  "spec has no `input`, and the student's first layer does not tell one. Give "
                  "--input-shape or --data."),
    "KD541": Code("delivered value freed by fsdp", "Under strategy fsdp a unit's parameters are "
                  "gathered only while the unit runs and freed when its forward returns. A delivered "
                  "or recorded value that is a view of such a parameter (a slice of a table, a weight "
                  "returned as is) would be read after that: copy it in the model's code or hold the "
                  "model whole (`replicated`)."),
    "KD545": Code("vocabularies differ", "A token loss compares the student's and the teacher's "
                  "next-token distributions, which needs one vocabulary: the logits' last "
                  "dimensions differ, so the models use two tokenizers. Distilling between two "
                  "tokenizers (cross-tokenizer distillation) is not supported; the message gives "
                  "both sizes and the notes point at the models."),
    "KD546": Code("pretrained model not available locally", "`kdsl.hub:hf_pretrained` (and "
                  "`hf_tokenizer`, a prompt reader's `tokenizer=`) read a folder that "
                  "`save_pretrained` wrote, or a Hugging Face model id already in the local cache. "
                  "kdsl never downloads (as with HF_HUB_OFFLINE=1): an id that is not cached is "
                  "refused with its name; download it once with `hf download ID`."),
    # ---------------------------------------------------------------- runtime
    "KD550": Code("model cannot generate", "The model that `generate` names has no `generate` "
                  "method (or, a Hugging Face model, says it cannot generate). Generate from a causal "
                  "language model."),
    "KD547": Code("LoRA cannot adapt the modules", "`lora_modules` names modules that the model "
                  "lacks, or of a kind peft's LoRA cannot adapt. The hint lists the model's "
                  "adaptable module names (linear, convolution and embedding layers)."),
    "KD601": Code("loss failed", "An error was raised while evaluating a loss term."),
    "KD602": Code("connector failed", "An error was raised while evaluating a connector."),
    "KD603": Code("delivery queue empty", "The student's pass called a delivered method more "
                  "often than the teacher's pass did."),
    "KD604": Code("delivery count mismatch", "At the end of a step the student consumed fewer "
                  "delivered results than the teacher produced."),
    "KD605": Code("delivery overflow", "The teacher's pass produced more results than `keep` "
                  "allows."),
    "KD606": Code("record overwritten in place", "A recorded tensor was changed by a later "
                  "in-place operation before the loss read it."),
    "KD607": Code("record empty", "A record has no value in this step: its module or callable "
                  "did not run."),
    "KD608": Code("batch field missing", "A loss reads `batch.NAME` but the step was not given "
                  "it (`step(x, target=y)` or `step(x, batch={...})`)."),
    "KD609": Code("distiller closed", "The distiller was closed; compile a new one."),
    "KD610": Code("selection failed", "Selecting an element or attribute of a recorded value "
                  "failed (wrong index, key or attribute)."),
    "KD611": Code("function or model failed", "An error was raised while evaluating a tensor "
                  "function, or running a model on values (the generator of `input`)."),
    # ---------------------------------------------------------------- CLI / training
    "KD612": Code("no prompts to generate from", "`generate` completes the batch's prompts, read "
                  "from its prompt_ids and prompt_mask fields (kdsl.prompt_batches); the data's batches "
                  "have none. Use prompt/completion data such as kdsl.data:arith."),
    "KD613": Code("generation failed", "The model that `generate` names raised an error while "
                  "completing the batch's prompts (most often: a prompt plus max_new_tokens is longer "
                  "than the model's context); the message gives its error."),
    "KD701": Code("bad command-line value", "A flag's value is malformed or out of range."),
    "KD702": Code("data problem", "The data reference could not be loaded or did not return "
                  "train and validation datasets."),
    "KD703": Code("resume problem", "The run directory has no usable checkpoint, or it was "
                  "written by a different spec."),
    "KD704": Code("device unavailable", "The requested device (cuda) is not available."),
    "KD705": Code("mixed precision unsupported", "fp16 needs a GPU; bf16 runs on CPU and GPU."),
    "KD706": Code("output problem", "The output directory cannot be written."),
    "KD707": Code("loss is not finite", "A loss became NaN or infinite during training."),
    "KD730": Code("teacher without weights", "`kdsl train` refuses a frozen teacher that loads "
                  "no weights (no `from \"FILE\"`, no pretrained option): it would teach from random "
                  "weights. Add `from \"FILE\"`, pass --teacher-ckpt, or say it is meant: "
                  "--allow-random-teacher (allow_random_teacher = true in the train block)."),
    "KD708": Code("torch.compile unavailable", "Compiling the models with torch.compile failed "
                  "(no C++ compiler, an unsupported platform, or an error from dynamo or inductor): "
                  "they run eagerly instead, with the same results."),
    "KD710": Code("teacher store unreadable", "The --teacher-cache directory holds no complete "
                  "teacher-output store: no manifest (a `kdsl teacher-cache` that did not finish), a "
                  "damaged manifest, or a data file of the wrong size. Rebuild it with `kdsl teacher-cache`."),
    "KD711": Code("teacher store is stale", "The teacher-output store was built for other teacher "
                  "weights, teacher records, data, augmentation, seed or precision than this run's; "
                  "the message names the part that differs. Rebuild it with the command in the hint."),
    "KD712": Code("spec cannot use a teacher store", "Only frozen teachers whose passes are read "
                  "by records can be stored: a trainable teacher, a delivery, a generated input or "
                  "declared stages and phases need the teacher's pass to run."),
    "KD713": Code("record cannot be stored", "A stored record must be one tensor per step whose "
                  "first dimension is the batch and whose per-sample shape is the same in every step."),
    "KD714": Code("top-k does not apply", "--topk keeps the k largest logits of records whose last "
                  "dimension is the classes (a logit record); k must be below the number of classes."),
    "KD715": Code("teacher store too large", "The store would exceed --max-size; nothing was written."),
    "KD716": Code("teacher store too short", "The run trains more epochs of augmented data than the "
                  "store holds; augmentations differ per epoch, so each epoch needs its own."),
    "KD718": Code("data randomness not replayable", "Reading the same sample twice with kdsl's "
                  "per-sample seed gave different values: the data draws randomness from a generator "
                  "kdsl does not seed (Python's random, numpy), so a store could not replay it."),
    "KD720": Code("model forward failed", "`kdsl modules` ran the model once on zeros of "
                  "--input-shape (and --input-dtype) to find each module's output shape, and the "
                  "forward raised: the shape or dtype is not what the model takes."),
    "KD725": Code("best metric unavailable", "The run's rows lack the validation metric that "
                  "best_metric names (no validation data, or a metric of another kind of model)."),
    "KD726": Code("logger unavailable", "A logging integration (tensorboard, mlflow, wandb) was asked for but its "
                  "package is not installed; the hint gives the install command."),
    "KD727": Code("language server unavailable", "`kdsl lsp` needs pygls, an optional extra that is not "
                  "installed; the hint gives the install command."),
    "KD740": Code("unknown batch field in inputs", "The train block's `inputs` names a field "
                  "that the data's items do not have (kdsl.data:text gives input_ids, "
                  "attention_mask and labels), or leaves the models nothing to be called with."),
    "KD741": Code("inputs without named fields", "`inputs` chooses the batch fields that models "
                  "are called with by keyword; the data's items are (input, target) pairs, which "
                  "have no names, so models are called with the input."),
    "KD742": Code("no language-model output", "With task = \"lm\" the models evaluated must "
                  "return next-token logits [batch, tokens, vocabulary] (a tensor, or an output "
                  "holding `logits` or one first), and the batches must carry `labels`."),
    "KD743": Code("bad JSON line in prompt data", "A line of a prompt/completion or chat JSON-lines "
                  "file is not a JSON object. The error points at the line and column."),
    "KD744": Code("missing field in prompt data", "Each line of prompt data holds `prompt` and "
                  "`completion` (strings), or `messages` (a list of {role, content} objects whose "
                  "last is the assistant's answer). The error names the line and what is missing."),
    "KD745": Code("no chat template", "Chat data (`messages`, or `chat = true`) is formatted with "
                  "the tokenizer's chat template, and this tokenizer has none (the byte tokenizer "
                  "never has one). Use prompt/completion data, or a tokenizer with a template."),
    "KD746": Code("prompt data unusable", "The prompt data gave no example to train on: the file "
                  "is empty, or every example lost its completion to `max_length`."),
    "KD750": Code("sweep unavailable", "`kdsl sweep` needs Optuna, an optional extra that is not "
                  "installed: pip install 'kdsl[sweep]' (or pip install optuna)."),
    "KD751": Code("nothing to search", "`kdsl sweep` searches the spaces the spec's params "
                  "declare (`param tau = 4 search uniform(1, 8)`); this spec declares none."),
    "KD752": Code("sweep directory of another sweep", "The sweep directory holds a study of "
                  "another spec, other search spaces, settings or objective; a sweep resumes only "
                  "its own. Choose another --dir, or --overwrite to start it afresh."),
    "KD753": Code("no trial finished", "Every trial of the sweep failed or was pruned, so there is "
                  "no best trial; each failed trial's error is in its run directory's trial.json."),
    # ---------------------------------------------------------------- kdsl convert
    "KD760": Code("config cannot be read", "`kdsl convert` could not read the MMRazor or "
                  "torchdistill config: a Python syntax error, YAML that does not parse, a top "
                  "level that is not a mapping, or a value of another type where the converter "
                  "needs a mapping, list, integer or string. Nothing in the config is executed."),
    "KD761": Code("config base not found", "A `_base_` file of an MMRazor config does not "
                  "exist; paths are relative to the config that names them."),
    "KD762": Code("config bases form a cycle", "Config files name each other in `_base_` in a "
                  "loop; mmengine refuses such configs too."),
    "KD763": Code("unknown YAML tag", "The torchdistill config uses a tag the converter's safe "
                  "loader does not know. Known tags are read as data and never imported or "
                  "called."),
    "KD764": Code("unknown algorithm", "The config's algorithm (MMRazor `model.type`) or "
                  "distiller has no kdsl translation; write the spec by hand."),
    "KD765": Code("not a distillation config", "The file has no teacher/student models or "
                  "distiller that the converter recognises, or its format could not be told "
                  "(give --from mmrazor or --from torchdistill)."),
    "KD766": Code("converter dependency missing", "Reading torchdistill YAML needs PyYAML: "
                  "pip install 'kdsl[convert]'."),
    "KD767": Code("converted spec does not check", "The config converted, but a value in it is "
                  "not one kdsl's components take (an option of the wrong type or out of range), "
                  "so the spec fails `kdsl check`; the spec's own diagnostics follow."),
    # ---------------------------------------------------------------- optimization
    "KD770": Code("lr schedule does not fit its stage", "A schedule's span (begin, end), a warm-up "
                  "or a milestone lies past the stage it runs in: each stage starts its schedules "
                  "afresh, over its own epochs (x optimizer steps per epoch, for unit=\"iter\"). "
                  "Shorten the span or lengthen the stage."),
    "KD771": Code("parameter group matches nothing", "A parameter-group pattern of the optimizer "
                  "(custom_keys) names no parameter the phase trains; its multipliers apply to "
                  "nothing. The warning lists the closest parameter names."),
    "KD772": Code("optimizer or scheduler reference failed", "A torch.optim optimizer or lr "
                  "scheduler given by reference (torch_optimizer(\"torch.optim:RMSprop\", ...)) "
                  "could not be imported, is not an optimizer or scheduler class, or refused its "
                  "options."),
    "KD773": Code("carried gradients cannot be checkpointed", "zero_grad = \"after_step\" (mmengine's "
                  "backward/step/zero_grad order) carries the gradients one phase's backward leaves on "
                  "another's parameters into its next step; a checkpoint within an epoch (checkpoint_every) "
                  "does not hold them, so the two are refused together. Each epoch starts with no "
                  "gradient, so the checkpoints at the epochs' ends resume exactly."),
    "KD774": Code("bad --visualize", "--visualize names the records to draw, separated by commas "
                  "(--visualize s_feat,t_feat), each a record of the spec; it draws validation samples, "
                  "so the run needs data."),
    "KD775": Code("record is not a feature map", "A record --visualize draws must hold a tensor "
                  "[N, C, H, W] (drawn as its channel mean or top channels) or [N, H, W]."),
    "KD780": Code("fsdp placement does not fit the run", "The run's placement (strategy, "
                  "replicated, offloaded, given in the spec or on the command line) fails the "
                  "checks of KD226-KD229 for the models of this run; the message names which."),
    "KD781": Code("sharded checkpoint incomplete", "checkpoint.pt of an fsdp run names a folder of "
                  "checkpoint shards (shards/epochN, torch.distributed.checkpoint) and a file of it, or "
                  "the folder, is missing: the run directory was copied or cleaned in part. Restore it "
                  "whole, or start a new run."),
    "KD782": Code("sharded checkpoint damaged", "A file of the checkpoint shards is not the one the "
                  "run wrote (its size or sha256 differs from what checkpoint.pt records), checkpoint.pt's "
                  "record of them is malformed, or the shards cannot be read. Nothing of it is loaded."),
    "KD783": Code("sharded checkpoint not written", "Writing an epoch's checkpoint shards failed (a full "
                  "disk, a rank that died while writing); the previous checkpoint stays the current one "
                  "and --resume continues from it."),
    "KD786": Code("processes did not meet", "A run of several processes starts with a rendezvous: "
                  "each process connects to the first one's address (MASTER_ADDR:MASTER_PORT, which "
                  "torchrun sets from --rdzv-endpoint or --master-addr/--master-port). Not all of them "
                  "arrived within --collective-timeout: a machine not started, one started with another "
                  "--nnodes or endpoint, or an address another machine cannot reach."),
    "KD790": Code("spec needs kdsl's loop", "The Hugging Face and Lightning integrations run a spec "
                  "of one step; stages, phases and a generated input give each phase its own "
                  "optimizer, which only `kdsl train` runs."),
    "KD791": Code("integration checkpoint does not fit", "A Trainer or Lightning checkpoint being "
                  "resumed lacks kdsl's state (connectors, learning losses), or holds another "
                  "spec's."),
    "KD792": Code("integration unavailable", "kdsl.integrations.hf needs transformers and "
                  "kdsl.integrations.lightning needs lightning; the hint gives the install command."),
    "KD793": Code("integration needs an example batch", "The spec is checked (and connector "
                  "widths inferred) on one training example before training: give the trainer its "
                  "training data."),
    "KD794": Code("data sharded twice", "Under DDP, kdsl's loader of the spec's data already gives "
                  "each rank its shard; Lightning's distributed sampler would shard it again: pass "
                  "use_distributed_sampler=False to L.Trainer."),
    "KD776": Code("no negatives of another class", "contrast_negatives draws each sample's CRD "
                  "negatives from the training samples of other classes; the training data holds one "
                  "class only."),
    "KD777": Code("collate failed", "The collate function given by reference (collate = "
                  "\"pkg.module:function\") raised on a batch, or returned neither a dict of fields nor "
                  "an (input, target) pair. The error names the reference, the batch and its samples."),
    "KD778": Code("batch sampler and checkpoints within an epoch", "A batch sampler given by "
                  "reference orders an epoch's batches itself; a checkpoint within an epoch "
                  "(checkpoint_every) could not resume inside that order, so the two are refused together."),
}


def explain(code: str) -> str:
    entry = CODES.get(code.upper())
    if entry is None:
        raise KeyError(code)
    return f"{code.upper()}: {entry.title}\n\n{entry.explanation}"
