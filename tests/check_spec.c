/*
 * check_spec.c - the job spec parser: defaults, every field, the field path
 * of each kind of error, data roots, canonical JSON, the embedded schema
 * against the parser's defaults, and loading Fashion-MNIST and CSV data.
 */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <sys/stat.h>
#include <zlib.h>

#include "dwf_spec.h"
#include "testutil.h"

static int parse(const char *json, dwf_spec *s, char *field, dwf_err *e)
{
    return dwf_spec_parse(json, strlen(json), NULL, 0, s, field, e);
}

/* Parses json, which must succeed; returns the canonical text (malloc'd). */
static char *canon(const char *json)
{
    dwf_spec s;
    char field[DWF_FIELD_LEN];
    dwf_err e = {0};
    int rc = parse(json, &s, field, &e);
    ck_assert_msg(rc == 0, "%s: %s", json, e.msg);
    char *out = strdup(s.json);
    dwf_spec_free(&s);
    return out;
}

/* ---- defaults and fields -------------------------------------------- */

START_TEST(test_defaults)
{
    dwf_spec s;
    char field[DWF_FIELD_LEN];
    dwf_err e = {0};
    ck_assert_int_eq(parse("{}", &s, field, &e), 0);
    ck_assert_str_eq(s.name, "job");
    ck_assert_int_eq(s.priority, 0);
    ck_assert_int_eq(s.checkpoint_every, 1);
    ck_assert_int_eq(s.data.kind, DWF_DATA_FASHION_MNIST);
    ck_assert_str_eq(s.data.dir, FMNIST_DIR);
    ck_assert_int_eq(s.data.train_subset, 0);
    ck_assert_int_eq(s.data.test_subset, 0);
    ck_assert(s.data.validation == 0);
    ck_assert_int_eq(s.data.norm, DWF_NORM_SCALE);
    ck_assert_int_eq(s.select.enabled, 0);
    /* LeNet-300-100, D = 3, resolved for 1x28x28 and 10 classes */
    ck_assert_str_eq(s.arch_name, "mlp");
    ck_assert_int_eq(s.arch.depth, 3);
    ck_assert_int_eq(s.arch.factorize_bias, 0);
    ck_assert_int_eq(s.arch.in_c, 1);
    ck_assert_int_eq(s.arch.in_h, 28);
    ck_assert_int_eq(s.arch.in_w, 28);
    ck_assert_int_eq(s.arch.n_classes, 10);
    int units[3], n = 0;
    for (int i = 0; i < s.arch.n_layers; i++) {
        if (s.arch.layers[i].kind == DWF_LAYER_DENSE) {
            ck_assert_int_lt(n, 3);
            units[n++] = s.arch.layers[i].units;
        }
        ck_assert_int_eq(dwf_arch_layer_depth(&s.arch, i), 3);
    }
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(units[0], 300);
    ck_assert_int_eq(units[1], 100);
    ck_assert_int_eq(units[2], 10);
    ck_assert_int_eq(s.arch.layers[s.arch.n_layers - 1].out_c, 10);
    ck_assert_int_eq(dwf_arch_weight_count(&s.arch, 1), 784 * 300);
    /* training options */
    const dwf_train_opts *o = &s.opts;
    ck_assert_uint_eq(o->seed, 1);
    ck_assert_int_eq(o->epochs, 20);
    ck_assert_int_eq(o->batch_size, 128);
    ck_assert(o->lambda == 1e-3);
    ck_assert_int_eq(o->init, DWF_INIT_AUTO);
    ck_assert(o->eps_init == 0.25);
    ck_assert(o->eps_prune == DWF_EPS_F32);
    ck_assert_int_eq(o->optim.kind, DWF_OPT_SGD);
    ck_assert(o->optim.lr == 0.2);
    ck_assert(o->optim.momentum == 0);
    ck_assert_int_eq(o->optim.nesterov, 0);
    ck_assert(o->optim.beta1 == 0.9);
    ck_assert(o->optim.beta2 == 0.999);
    ck_assert(o->optim.adam_eps == 1e-8);
    ck_assert_int_eq(o->optim.sched, DWF_SCHED_COSINE);
    ck_assert(o->optim.step_epochs == 10);
    ck_assert(o->optim.gamma == 0.1);
    ck_assert(o->optim.lr_min == 0);
    ck_assert(o->optim.warmup_epochs == 0);
    ck_assert_int_eq(o->threads, 1);
    ck_assert_int_eq(o->norm, DWF_NORM_SCALE);
    ck_assert_int_eq(o->method, DWF_METHOD_DWF);
    ck_assert(o->target_cr == 10);
    ck_assert_int_eq(o->finetune_epochs, 0);
    ck_assert(o->prune_start == 0);
    ck_assert(o->prune_end == 15); /* 75% of 20 epochs */
    ck_assert_int_eq(o->prune_every, 100);
    ck_assert_int_eq(o->snip_batches, 1);
    ck_assert_int_eq(o->synflow_rounds, 100);
    /* the canonical text lists the values used, in their short form */
    ck_assert_ptr_nonnull(s.json);
    ck_assert_ptr_nonnull(strstr(s.json, "\"lr\":0.2,"));
    ck_assert_ptr_nonnull(strstr(s.json, "\"hidden\":[300,100]"));
    ck_assert_ptr_nonnull(strstr(s.json, "\"eps\":1.1920928955078125e-7"));
    ck_assert_ptr_nonnull(strstr(s.json, "\"adam_eps\":1e-8"));
    ck_assert_ptr_nonnull(strstr(s.json, "\"prune_end\":15.0"));
    ck_assert_ptr_null(strstr(s.json, "\"select\""));
    dwf_spec_free(&s);
    ck_assert_ptr_null(s.json);
    dwf_spec_free(&s); /* twice is harmless */
}
END_TEST

static const char *full_spec =
    "{\"name\": \"all fields\", \"priority\": -7, \"seed\": 42, \"method\": \"gradual\","
    " \"checkpoint_every\": 3,"
    " \"data\": {\"dataset\": \"fashion-mnist\", \"dir\": \"/usr/share/datasets/fashion-mnist/\","
    "   \"train_subset\": 1000, \"test_subset\": 300, \"validation\": 0.25, \"normalize\": \"standardize\"},"
    " \"model\": {\"arch\": \"lenet5\", \"depth\": 2, \"layer_depths\": [1, 2, 3, 4, 5],"
    "   \"factorize_bias\": true, \"init\": \"naive\", \"eps_init\": 0.5},"
    " \"train\": {\"epochs\": 12, \"batch_size\": 64, \"optimizer\": \"sgd\", \"lr\": 0.05,"
    "   \"momentum\": 0.9, \"nesterov\": true, \"beta1\": 0.8, \"beta2\": 0.99, \"adam_eps\": 1e-6,"
    "   \"schedule\": \"step\", \"step_epochs\": 4, \"gamma\": 0.5, \"lr_min\": 0.001,"
    "   \"warmup_epochs\": 0.5, \"lambda\": 0.02, \"threads\": 2},"
    " \"prune\": {\"eps\": 1e-6, \"target_cr\": 50, \"finetune_epochs\": 3, \"prune_start\": 1,"
    "   \"prune_end\": 9.5, \"prune_every\": 20, \"snip_batches\": 4, \"synflow_rounds\": 10},"
    " \"select\": {\"max_drop\": 0.02, \"split\": \"validation\"}}";

START_TEST(test_every_field)
{
    dwf_spec s;
    char field[DWF_FIELD_LEN];
    dwf_err e = {0};
    int rc = parse(full_spec, &s, field, &e);
    ck_assert_msg(rc == 0, "%s (%s)", e.msg, field);
    ck_assert_str_eq(s.name, "all fields");
    ck_assert_int_eq(s.priority, -7);
    ck_assert_int_eq(s.checkpoint_every, 3);
    ck_assert_str_eq(s.data.dir, "/usr/share/datasets/fashion-mnist/");
    ck_assert_int_eq(s.data.train_subset, 1000);
    ck_assert_int_eq(s.data.test_subset, 300);
    ck_assert(s.data.validation == 0.25);
    ck_assert_int_eq(s.data.norm, DWF_NORM_STANDARDIZE);
    ck_assert_str_eq(s.arch_name, "lenet5");
    ck_assert_int_eq(s.arch.depth, 2);
    ck_assert_int_eq(s.arch.factorize_bias, 1);
    int k = 0;
    for (int i = 0; i < s.arch.n_layers; i++)
        if (dwf_layer_has_weight(s.arch.layers[i].kind)) {
            k++;
            ck_assert_int_eq(dwf_arch_layer_depth(&s.arch, i), k);
        }
    ck_assert_int_eq(k, 5);
    ck_assert_int_eq(s.arch.layers[0].kind, DWF_LAYER_CONV2D);
    ck_assert_int_eq(s.arch.layers[0].filters, 6);
    const dwf_train_opts *o = &s.opts;
    ck_assert_uint_eq(o->seed, 42);
    ck_assert_int_eq(o->method, DWF_METHOD_GRADUAL);
    ck_assert_int_eq(o->init, DWF_INIT_NAIVE);
    ck_assert(o->eps_init == 0.5);
    ck_assert_int_eq(o->norm, DWF_NORM_STANDARDIZE);
    ck_assert_int_eq(o->epochs, 12);
    ck_assert_int_eq(o->batch_size, 64);
    ck_assert_int_eq(o->optim.kind, DWF_OPT_SGD);
    ck_assert(o->optim.lr == 0.05);
    ck_assert(o->optim.momentum == 0.9);
    ck_assert_int_eq(o->optim.nesterov, 1);
    ck_assert(o->optim.beta1 == 0.8);
    ck_assert(o->optim.beta2 == 0.99);
    ck_assert(o->optim.adam_eps == 1e-6);
    ck_assert_int_eq(o->optim.sched, DWF_SCHED_STEP);
    ck_assert(o->optim.step_epochs == 4);
    ck_assert(o->optim.gamma == 0.5);
    ck_assert(o->optim.lr_min == 0.001);
    ck_assert(o->optim.warmup_epochs == 0.5);
    ck_assert(o->lambda == 0.02);
    ck_assert_int_eq(o->threads, 2);
    ck_assert(o->eps_prune == 1e-6);
    ck_assert(o->target_cr == 50);
    ck_assert_int_eq(o->finetune_epochs, 3);
    ck_assert(o->prune_start == 1);
    ck_assert(o->prune_end == 9.5);
    ck_assert_int_eq(o->prune_every, 20);
    ck_assert_int_eq(o->snip_batches, 4);
    ck_assert_int_eq(o->synflow_rounds, 10);
    ck_assert_int_eq(s.select.enabled, 1);
    ck_assert_int_eq(s.select.use_validation, 1);
    ck_assert(s.select.max_drop == 0.02);
    dwf_spec_free(&s);

    /* the other choices of every enum */
    static const char *const methods[] = {"dwf", "magnitude", "gradual",
                                          "random", "snip", "synflow"};
    for (int i = 0; i < 6; i++) {
        char j[128];
        snprintf(j, sizeof j, "{\"method\": \"%s\"}", methods[i]);
        ck_assert_int_eq(parse(j, &s, field, &e), 0);
        ck_assert_str_eq(dwf_method_name(s.opts.method), methods[i]);
        dwf_spec_free(&s);
    }
    ck_assert_int_eq(parse("{\"train\": {\"optimizer\": \"adam\", \"schedule\": \"constant\"},"
                           " \"data\": {\"normalize\": \"none\"}, \"model\": {\"init\": \"dwf\"}}",
                           &s, field, &e), 0);
    ck_assert_int_eq(s.opts.optim.kind, DWF_OPT_ADAM);
    ck_assert_int_eq(s.opts.optim.sched, DWF_SCHED_CONSTANT);
    ck_assert_int_eq(s.data.norm, DWF_NORM_NONE);
    ck_assert_int_eq(s.opts.init, DWF_INIT_DWF);
    dwf_spec_free(&s);
    /* integral reals are integers; kaiming with depth 1 everywhere */
    ck_assert_int_eq(parse("{\"train\": {\"epochs\": 5.0}, \"model\": {\"init\": \"kaiming\","
                           " \"depth\": 2, \"layer_depths\": [1, 1, 1]}}", &s, field, &e), 0);
    ck_assert_int_eq(s.opts.epochs, 5);
    ck_assert_int_eq(s.opts.init, DWF_INIT_KAIMING);
    ck_assert(s.opts.prune_end == 3.75);
    dwf_spec_free(&s);
    /* an mlp without hidden layers, and other data kinds (the paths are
     * not read by the parse) */
    ck_assert_int_eq(parse("{\"model\": {\"hidden\": [], \"depth\": 1}}", &s, field, &e), 0);
    ck_assert_int_eq(s.arch.n_layers, 2); /* flatten, dense10 */
    dwf_spec_free(&s);
    ck_assert_int_eq(parse("{\"data\": {\"dataset\": \"mnist\", \"dir\": \"/data/mnist\"}}",
                           &s, field, &e), 0);
    ck_assert_int_eq(s.data.kind, DWF_DATA_MNIST);
    ck_assert_str_eq(s.data.dir, "/data/mnist");
    ck_assert_int_eq(s.arch.n_classes, 10);
    dwf_spec_free(&s);
    ck_assert_int_eq(parse("{\"data\": {\"dataset\": \"idx\", \"train_images\": \"a\","
                           " \"train_labels\": \"b\", \"test_images\": \"c\", \"test_labels\": \"d\"}}",
                           &s, field, &e), 0);
    ck_assert_int_eq(s.data.kind, DWF_DATA_IDX);
    ck_assert_str_eq(s.data.train_images, "a");
    ck_assert_str_eq(s.data.train_labels, "b");
    ck_assert_str_eq(s.data.test_images, "c");
    ck_assert_str_eq(s.data.test_labels, "d");
    ck_assert_int_eq(s.arch.depth, 3);
    dwf_spec_free(&s);
    ck_assert_int_eq(parse("{\"data\": {\"dataset\": \"csv\", \"train\": \"tr.csv\","
                           " \"test\": \"te.csv\", \"label_column\": -1}}", &s, field, &e), 0);
    ck_assert_int_eq(s.data.kind, DWF_DATA_CSV);
    ck_assert_str_eq(s.data.train_images, "tr.csv");
    ck_assert_str_eq(s.data.test_images, "te.csv");
    ck_assert_int_eq(s.data.label_col, -1);
    dwf_spec_free(&s);
}
END_TEST

START_TEST(test_custom_layers)
{
    dwf_spec s;
    char field[DWF_FIELD_LEN];
    dwf_err e = {0};
    const char *j =
        "{\"model\": {\"arch\": \"custom\", \"depth\": 2, \"layers\": ["
        " {\"type\": \"conv2d\", \"filters\": 4, \"kernel\": 3, \"padding\": 1, \"depth\": 4},"
        " {\"type\": \"relu\"}, {\"type\": \"maxpool2d\"},"
        " {\"type\": \"conv2d\", \"filters\": 8, \"kernel\": 3, \"stride\": 2},"
        " {\"type\": \"maxpool2d\", \"kernel\": 3, \"stride\": 1},"
        " {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 32}, {\"type\": \"relu\"},"
        " {\"type\": \"dense\", \"depth\": 1}]}}";
    int rc = parse(j, &s, field, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    const dwf_arch *a = &s.arch;
    ck_assert_str_eq(s.arch_name, "custom");
    ck_assert_int_eq(a->n_layers, 9);
    ck_assert_int_eq(a->layers[0].out_c, 4);
    ck_assert_int_eq(a->layers[0].out_h, 28);
    ck_assert_int_eq(dwf_arch_layer_depth(a, 0), 4);
    ck_assert_int_eq(a->layers[2].out_h, 14);       /* pool 2, stride 2 */
    ck_assert_int_eq(a->layers[3].out_h, 6);        /* (14 - 3) / 2 + 1 */
    ck_assert_int_eq(dwf_arch_layer_depth(a, 3), 2);
    ck_assert_int_eq(a->layers[4].stride, 1);
    ck_assert_int_eq(a->layers[4].out_h, 4);
    ck_assert_int_eq(a->layers[6].units, 32);
    ck_assert_int_eq(a->layers[8].units, 10);       /* the class count */
    ck_assert_int_eq(dwf_arch_layer_depth(a, 8), 1);
    ck_assert_ptr_nonnull(strstr(s.json, "\"units\":\"classes\""));
    ck_assert_ptr_nonnull(strstr(s.json,
        "{\"kernel\":2,\"stride\":2,\"type\":\"maxpool2d\"}"));
    dwf_spec_free(&s);
    /* "classes" spelled out */
    ck_assert_int_eq(parse("{\"model\": {\"arch\": \"custom\", \"layers\": ["
                           "{\"type\": \"dense\", \"units\": \"classes\"}]}}",
                           &s, field, &e), 0);
    ck_assert_int_eq(s.arch.layers[0].units, 10);
    dwf_spec_free(&s);
}
END_TEST

/* ---- errors ---------------------------------------------------------- */

typedef struct bad_case {
    const char *json;
    const char *field;   /* expected err_field */
    int rc;
    const char *msg;     /* expected substring of the message */
} bad_case;

static const bad_case bad[] = {
    {"{", "", DWF_EFORMAT, "invalid JSON"},
    {"", "", DWF_EFORMAT, "invalid JSON"},
    {"{} x", "", DWF_EFORMAT, "invalid JSON"},
    {"{\"seed\": 1, \"seed\": 2}", "", DWF_EFORMAT, "duplicate"},
    {"[1, 2]", "", DWF_EINVAL, "must be a JSON object (got array)"},
    {"5", "", DWF_EINVAL, "must be a JSON object (got integer)"},
    {"{\"bogus\": 1}", "bogus", DWF_EINVAL, "bogus: unknown field"},
    {"{\"model\": {\"hiden\": [10]}}", "model.hiden", DWF_EINVAL, "model.hiden: unknown field"},
    {"{\"train\": {\"lr\": 0.1, \"learning_rate\": 1}}", "train.learning_rate", DWF_EINVAL, "unknown"},
    {"{\"select\": {\"max_drop\": 0.1, \"spilt\": 1}, \"data\": {\"validation\": 0.1}}", "select.spilt", DWF_EINVAL, "unknown"},
    {"{\"data\": []}", "data", DWF_EINVAL, "must be an object (got array)"},
    {"{\"train\": {\"lr\": \"fast\"}}", "train.lr", DWF_EINVAL, "train.lr: must be a number (got string)"},
    {"{\"train\": {\"lr\": -1}}", "train.lr", DWF_EINVAL, "train.lr: must be > 0 (got -1)"},
    {"{\"train\": {\"lr\": 0}}", "train.lr", DWF_EINVAL, "must be > 0"},
    /* a float32 threshold: 1e300 would be inf (the job would fail after training) */
    {"{\"prune\": {\"eps\": 1e300}}", "prune.eps", DWF_EINVAL, "prune.eps: must be in (0, 3.40282e+38] (got 1e+300)"},
    {"{\"train\": {\"epochs\": 0}}", "train.epochs", DWF_EINVAL, "train.epochs: must be 1..10000 (got 0)"},
    {"{\"train\": {\"epochs\": 2.5}}", "train.epochs", DWF_EINVAL, "must be an integer (got 2.5)"},
    {"{\"train\": {\"epochs\": true}}", "train.epochs", DWF_EINVAL, "must be an integer (got boolean)"},
    {"{\"train\": {\"batch_size\": 65537}}", "train.batch_size", DWF_EINVAL, "1..65536"},
    {"{\"train\": {\"momentum\": 1}}", "train.momentum", DWF_EINVAL, "[0, 1)"},
    {"{\"train\": {\"threads\": 0}}", "train.threads", DWF_EINVAL, "1..8"},
    {"{\"train\": {\"lambda\": -0.1}}", "train.lambda", DWF_EINVAL, ">= 0"},
    {"{\"train\": {\"nesterov\": 1}}", "train.nesterov", DWF_EINVAL, "true or false"},
    {"{\"train\": {\"nesterov\": true}}", "train.nesterov", DWF_EINVAL, "momentum > 0"},
    {"{\"train\": {\"nesterov\": true, \"momentum\": 0.9, \"optimizer\": \"adam\"}}", "train.momentum", DWF_EINVAL, "sgd"},
    {"{\"train\": {\"lr\": 0.1, \"lr_min\": 0.2}}", "train.lr_min", DWF_EINVAL, "<= train.lr"},
    {"{\"train\": {\"epochs\": 2, \"warmup_epochs\": 3}}", "train.warmup_epochs", DWF_EINVAL, "<= train.epochs"},
    {"{\"train\": {\"optimizer\": \"rmsprop\"}}", "train.optimizer", DWF_EINVAL, "must be one of \"sgd\", \"adam\" (got \"rmsprop\")"},
    {"{\"train\": {\"schedule\": 3}}", "train.schedule", DWF_EINVAL, "(got integer)"},
    {"{\"method\": \"prune\"}", "method", DWF_EINVAL, "must be one of"},
    {"{\"name\": \"\"}", "name", DWF_EINVAL, "empty"},
    {"{\"name\": \"a\\nb\"}", "name", DWF_EINVAL, "control"},
    {"{\"name\": 3}", "name", DWF_EINVAL, "must be a string"},
    {"{\"priority\": 101}", "priority", DWF_EINVAL, "-100..100"},
    {"{\"seed\": -1}", "seed", DWF_EINVAL, ">= 0"},
    {"{\"seed\": 9007199254740992}", "seed", DWF_EINVAL, "seed"},
    {"{\"checkpoint_every\": -1}", "checkpoint_every", DWF_EINVAL, "0..10000"},
    {"{\"model\": {\"depth\": 9}}", "model.depth", DWF_EINVAL, "model.depth: must be 1..8 (got 9)"},
    {"{\"model\": {\"depth\": 0}}", "model.depth", DWF_EINVAL, "1..8"},
    {"{\"model\": {\"arch\": \"resnet\"}}", "model.arch", DWF_EINVAL, "\"mlp\", \"lenet5\", \"custom\""},
    {"{\"model\": {\"eps_init\": 0}}", "model.eps_init", DWF_EINVAL, "(0, 1]"},
    {"{\"model\": {\"hidden\": 300}}", "model.hidden", DWF_EINVAL, "must be an array"},
    {"{\"model\": {\"hidden\": [300, 0]}}", "model.hidden[1]", DWF_EINVAL, "model.hidden[1]: must be 1..1048576 (got 0)"},
    {"{\"model\": {\"hidden\": [300, \"x\"]}}", "model.hidden[1]", DWF_EINVAL, "integer"},
    {"{\"model\": {\"arch\": \"lenet5\", \"hidden\": [10]}}", "model.hidden", DWF_EINVAL, "only used with model.arch \"mlp\""},
    {"{\"model\": {\"layers\": []}}", "model.layers", DWF_EINVAL, "custom"},
    {"{\"model\": {\"layer_depths\": [1, 2]}}", "model.layer_depths", DWF_EINVAL, "has 2 entries but the mlp has 3 weight layers"},
    {"{\"model\": {\"arch\": \"lenet5\", \"layer_depths\": [1, 2, 3]}}", "model.layer_depths", DWF_EINVAL, "5 weight layers"},
    {"{\"model\": {\"layer_depths\": [1, 9, 1]}}", "model.layer_depths[1]", DWF_EINVAL, "1..8"},
    {"{\"model\": {\"init\": \"kaiming\"}}", "model.init", DWF_EINVAL, "depth 1"},
    {"{\"model\": {\"init\": \"kaiming\", \"depth\": 1, \"layer_depths\": [1, 2, 1]}}", "model.init", DWF_EINVAL, "depth 2"},
    {"{\"model\": {\"arch\": \"custom\"}}", "model.layers", DWF_EINVAL, "required"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": []}}", "model.layers", DWF_EINVAL, "1..64"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"relu\"}]}}", "model.layers", DWF_EINVAL, "no dense or conv2d"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"conv2d\", \"filters\": 4, \"kernel\": 3},"
     " {\"type\": \"maxpool2d\", \"kernel\": 0}, {\"type\": \"dense\"}]}}",
     "model.layers[1].kernel", DWF_EINVAL, "model.layers[1].kernel: must be 1..64 (got 0)"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"conv2d\", \"filters\": 4, \"kernel\": 3, \"stride\": 2},"
     " {\"type\": \"maxpool2d\", \"kernel\": 20}, {\"type\": \"dense\"}]}}",
     "model.layers[1].kernel", DWF_EINVAL, "larger than input"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"conv2d\", \"kernel\": 3}, {\"type\": \"dense\"}]}}",
     "model.layers[0].filters", DWF_EINVAL, "required"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"relu\", \"units\": 3}, {\"type\": \"dense\"}]}}",
     "model.layers[0].units", DWF_EINVAL, "unknown field"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [{\"units\": 3}, {\"type\": \"dense\"}]}}",
     "model.layers[0].type", DWF_EINVAL, "required"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"lstm\"}, {\"type\": \"dense\"}]}}",
     "model.layers[0].type", DWF_EINVAL, "must be one of"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [7, {\"type\": \"dense\"}]}}",
     "model.layers[0]", DWF_EINVAL, "must be an object"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"dense\"}, {\"type\": \"dense\"}]}}",
     "model.layers[0].units", DWF_EINVAL, "only the last dense layer"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"dense\", \"units\": \"clases\"}]}}",
     "model.layers[0].units", DWF_EINVAL, "\"classes\""},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"dense\", \"units\": 5}]}}",
     "model.layers", DWF_EINVAL, "outputs 5 values"},
    {"{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"dense\", \"depth\": 9}]}}",
     "model.layers[0].depth", DWF_EINVAL, "1..8"},
    {"{\"model\": {\"arch\": \"custom\", \"layer_depths\": [1], \"layers\": [{\"type\": \"dense\"}]}}",
     "model.layer_depths", DWF_EINVAL, "only used"},
    {"{\"model\": {\"arch\": \"custom\", \"init\": \"kaiming\", \"depth\": 1, \"layers\": "
     "[{\"type\": \"dense\", \"units\": 8, \"depth\": 2}, {\"type\": \"dense\"}]}}",
     "model.init", DWF_EINVAL, "depth 2"},
    {"{\"data\": {\"dataset\": \"cifar\"}}", "data.dataset", DWF_EINVAL, "must be one of"},
    {"{\"data\": {\"train\": \"x.csv\"}}", "data.train", DWF_EINVAL, "not used with data.dataset \"fashion-mnist\""},
    {"{\"data\": {\"dataset\": \"csv\", \"train\": \"a\", \"test\": \"b\", \"dir\": \"/x\"}}", "data.dir", DWF_EINVAL, "not used"},
    {"{\"data\": {\"dataset\": \"mnist\"}}", "data.dir", DWF_EINVAL, "required"},
    {"{\"data\": {\"dataset\": \"idx\", \"train_images\": \"a\", \"train_labels\": \"b\", \"test_images\": \"c\"}}",
     "data.test_labels", DWF_EINVAL, "required"},
    {"{\"data\": {\"dataset\": \"csv\", \"train\": \"a\"}}", "data.test", DWF_EINVAL, "required"},
    {"{\"data\": {\"dataset\": \"csv\", \"train\": \"a\", \"test\": \"b\", \"label_column\": -2}}",
     "data.label_column", DWF_EINVAL, "must be -1..1000000 (got -2)"},
    {"{\"data\": {\"dir\": \"\"}}", "data.dir", DWF_EINVAL, "empty"},
    {"{\"data\": {\"validation\": 0.6}}", "data.validation", DWF_EINVAL, "[0, 0.5]"},
    {"{\"data\": {\"train_subset\": -5}}", "data.train_subset", DWF_EINVAL, ">= 0"},
    {"{\"data\": {\"normalize\": \"zscore\"}}", "data.normalize", DWF_EINVAL, "must be one of"},
    {"{\"select\": {}}", "select", DWF_EINVAL, "data.validation > 0"},
    {"{\"select\": {\"max_drop\": 2}, \"data\": {\"validation\": 0.1}}", "select.max_drop", DWF_EINVAL, "[0, 1]"},
    {"{\"select\": {\"split\": \"test\"}, \"data\": {\"validation\": 0.1}}", "select.split", DWF_EINVAL, "must be one of"},
    {"{\"prune\": {\"eps\": 0}}", "prune.eps", DWF_EINVAL, "must be in (0, "},
    {"{\"prune\": {\"target_cr\": 0.5}}", "prune.target_cr", DWF_EINVAL, ">= 1"},
    {"{\"prune\": {\"prune_every\": 0}}", "prune.prune_every", DWF_EINVAL, "1..1000000"},
    {"{\"method\": \"gradual\", \"prune\": {\"prune_end\": 30}}", "prune.prune_end", DWF_EINVAL, "<= train.epochs (20)"},
    {"{\"method\": \"gradual\", \"prune\": {\"prune_start\": 5, \"prune_end\": 4}}", "prune.prune_end", DWF_EINVAL, "> prune.prune_start"},
    {"{\"method\": \"gradual\", \"prune\": {\"prune_start\": 16}}", "prune.prune_start", DWF_EINVAL, "75%"},
};

START_TEST(test_errors)
{
    const bad_case *c = &bad[_i];
    dwf_spec s;
    char field[DWF_FIELD_LEN];
    dwf_err e = {0};
    memset(&s, 0x5a, sizeof s);
    strcpy(field, "stale");
    int rc = parse(c->json, &s, field, &e);
    ck_assert_msg(rc == c->rc, "%s: rc %d, want %d (%s)", c->json, rc, c->rc,
                  e.msg);
    ck_assert_msg(strcmp(field, c->field) == 0, "%s: field \"%s\", want \"%s\" (%s)",
                  c->json, field, c->field, e.msg);
    ck_assert_msg(strstr(e.msg, c->msg) != NULL, "%s: message \"%s\" lacks \"%s\"",
                  c->json, e.msg, c->msg);
    /* a failed parse leaves nothing to free */
    ck_assert_ptr_null(s.json);
    dwf_spec_free(&s);
    /* a NULL err_field is allowed */
    ck_assert_int_eq(dwf_spec_parse(c->json, strlen(c->json), NULL, 0, &s, NULL, &e), c->rc);
}
END_TEST

/* ---- data roots -------------------------------------------------------- */

static char *make_dir(void)
{
    char tmpl[] = "/tmp/dwf-spec-XXXXXX";
    char *d = mkdtemp(tmpl);
    ck_assert_ptr_nonnull(d);
    return strdup(d);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
}

START_TEST(test_roots)
{
    char *dir = make_dir();
    char tr[PATH_MAX], te[PATH_MAX], link[PATH_MAX], j[4 * PATH_MAX];
    snprintf(tr, sizeof tr, "%s/train.csv", dir);
    snprintf(te, sizeof te, "%s/test.csv", dir);
    snprintf(link, sizeof link, "%s/link.csv", dir);
    write_text(tr, "0,1\n1,2\n");
    write_text(te, "0,1\n");
    ck_assert_int_eq(symlink("/tmp", link), 0);
    const char *roots[] = {"/nonexistent-root", dir};
    dwf_spec s;
    char field[DWF_FIELD_LEN];
    dwf_err e = {0};

    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"csv\", \"train\": \"%s\", \"test\": \"%s\"}}", tr, te);
    ck_assert_msg(dwf_spec_parse(j, strlen(j), roots, 2, &s, field, &e) == 0, "%s", e.msg);
    dwf_spec_free(&s);
    /* without roots nothing is checked */
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"csv\", \"train\": \"/tmp\", \"test\": \"%s\"}}", te);
    ck_assert_int_eq(dwf_spec_parse(j, strlen(j), NULL, 0, &s, field, &e), 0);
    dwf_spec_free(&s);
    ck_assert_int_eq(dwf_spec_parse(j, strlen(j), roots, 2, &s, field, &e), DWF_EINVAL);
    ck_assert_str_eq(field, "data.train");
    ck_assert_str_eq(e.msg, "data.train: path outside the allowed data roots");
    /* .. and links are resolved */
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"csv\", \"train\": \"%s/../%s/train.csv\","
             " \"test\": \"%s\"}}", dir, strrchr(dir, '/') + 1, link);
    ck_assert_int_eq(dwf_spec_parse(j, strlen(j), roots, 2, &s, field, &e), DWF_EINVAL);
    ck_assert_str_eq(field, "data.test");
    ck_assert_ptr_nonnull(strstr(e.msg, "outside the allowed data roots"));
    /* a missing file cannot be placed */
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"csv\", \"train\": \"%s/nope.csv\", \"test\": \"%s\"}}", dir, te);
    ck_assert_int_eq(dwf_spec_parse(j, strlen(j), roots, 2, &s, field, &e), DWF_EINVAL);
    ck_assert_str_eq(field, "data.train");
    ck_assert_ptr_nonnull(strstr(e.msg, "nope.csv"));
    /* the default Fashion-MNIST folder is outside these roots ... */
    ck_assert_int_eq(dwf_spec_parse("{}", 2, roots, 2, &s, field, &e), DWF_EINVAL);
    ck_assert_str_eq(field, "data.dir");
    /* ... and inside these */
    const char *roots2[] = {"/usr/share/datasets"};
    ck_assert_msg(dwf_spec_parse("{}", 2, roots2, 1, &s, field, &e) == 0, "%s", e.msg);
    dwf_spec_free(&s);
    /* a root that is a prefix of the name only does not count */
    char sib[PATH_MAX + 8];
    snprintf(sib, sizeof sib, "%sx", dir);
    ck_assert_int_eq(mkdir(sib, 0700), 0);
    char sibf[PATH_MAX + 32];
    snprintf(sibf, sizeof sibf, "%s/t.csv", sib);
    write_text(sibf, "0,1\n");
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"csv\", \"train\": \"%s\", \"test\": \"%s\"}}", sibf, te);
    ck_assert_int_eq(dwf_spec_parse(j, strlen(j), roots, 2, &s, field, &e), DWF_EINVAL);
    ck_assert_str_eq(field, "data.train");
    unlink(sibf);
    rmdir(sib);
    unlink(link);
    unlink(tr);
    unlink(te);
    rmdir(dir);
    free(dir);
}
END_TEST

/* ---- canonical JSON ---------------------------------------------------- */

static const char *const roundtrip_specs[] = {
    "{}",
    "{\"name\": \"x\", \"train\": {\"lr\": 0.1, \"epochs\": 3}}",
    "{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"conv2d\", \"filters\": 2,"
    " \"kernel\": 5, \"depth\": 1}, {\"type\": \"maxpool2d\"}, {\"type\": \"relu\"},"
    " {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 16}, {\"type\": \"dense\"}]}}",
    "{\"data\": {\"dataset\": \"csv\", \"train\": \"a b.csv\", \"test\": \"\\\"q\\\".csv\"}, "
    "\"model\": {\"hidden\": [7]}}",
    "{\"data\": {\"validation\": 0.1}, \"select\": {}, \"prune\": {\"eps\": 1e-3, \"target_cr\": 33.3}}",
    "{\"seed\": 9007199254740991, \"train\": {\"lr\": 1e20, \"lambda\": 3e-300}}",
    /* a search without train.lambda: its first lambda, the bracket's
     * geometric middle, is the canonical train.lambda (found by fuzzing:
     * the default 1e-3 was written, which lies outside this bracket) */
    "{\"data\": {\"validation\": 0.1}, \"search\": {\"target_cr\": 20, \"lambda_min\": 1e-2,"
    " \"lambda_max\": 0.1}}",
};

START_TEST(test_canonical_roundtrip)
{
    const int n_rt = (int)(sizeof roundtrip_specs / sizeof roundtrip_specs[0]);
    const char *spec = _i < n_rt ? roundtrip_specs[_i] : full_spec;
    char *a = canon(spec);
    char *b = canon(a);
    ck_assert_str_eq(a, b);
    /* the canonical text is valid JSON whose values parse to the same spec */
    dwf_spec s1, s2;
    char field[DWF_FIELD_LEN];
    dwf_err e = {0};
    ck_assert_int_eq(parse(spec, &s1, field, &e), 0);
    ck_assert_int_eq(parse(a, &s2, field, &e), 0);
    ck_assert(s1.opts.optim.lr == s2.opts.optim.lr);
    ck_assert(s1.opts.lambda == s2.opts.lambda);
    ck_assert(s1.opts.eps_prune == s2.opts.eps_prune);
    ck_assert(s1.opts.target_cr == s2.opts.target_cr);
    ck_assert_uint_eq(s1.opts.seed, s2.opts.seed);
    ck_assert_int_eq(s1.arch.n_layers, s2.arch.n_layers);
    for (int i = 0; i < s1.arch.n_layers; i++) {
        ck_assert_int_eq(s1.arch.layers[i].units, s2.arch.layers[i].units);
        ck_assert_int_eq(s1.arch.layers[i].depth, s2.arch.layers[i].depth);
    }
    ck_assert_str_eq(s1.data.train_images, s2.data.train_images);
    ck_assert_str_eq(s1.data.test_images, s2.data.test_images);
    if (s1.search.enabled) { /* the first run's lambda is the spec's */
        ck_assert(s1.opts.lambda == s1.search.opts.lambda0);
        ck_assert(s2.search.opts.lambda0 == s1.search.opts.lambda0);
        ck_assert(fabs(s1.opts.lambda - sqrt(1e-3)) < 1e-12);
    }
    /* keys are sorted and compact */
    ck_assert_int_eq(a[0], '{');
    ck_assert_ptr_null(strchr(a, '\n'));
    ck_assert_ptr_null(strstr(a, ": "));
    dwf_spec_free(&s1);
    dwf_spec_free(&s2);
    free(a);
    free(b);
}
END_TEST

START_TEST(test_canonical_values)
{
    char *a = canon("{\"seed\": 9007199254740991, \"train\": {\"lr\": 1e20, \"lambda\": 3e-300,"
                    " \"momentum\": 0.95}, \"prune\": {\"target_cr\": 33.3}}");
    ck_assert_ptr_nonnull(strstr(a, "\"seed\":9007199254740991"));
    ck_assert_ptr_nonnull(strstr(a, "\"lr\":1e20"));
    ck_assert_ptr_nonnull(strstr(a, "\"lambda\":3e-300"));
    ck_assert_ptr_nonnull(strstr(a, "\"momentum\":0.95"));
    ck_assert_ptr_nonnull(strstr(a, "\"target_cr\":33.3"));
    ck_assert_ptr_nonnull(strstr(a, "\"epochs\":20,"));
    ck_assert_ptr_nonnull(strstr(a, "\"prune_every\":100,"));
    free(a);
    /* a real in the input comes back the same */
    json_error_t je;
    char *c = canon("{\"train\": {\"lr\": 0.123456789012345678}}");
    json_t *root = json_loads(c, 0, &je);
    ck_assert_ptr_nonnull(root);
    ck_assert(json_real_value(json_object_get(json_object_get(root, "train"), "lr")) ==
              0.123456789012345678);
    json_decref(root);
    free(c);
}
END_TEST

/* ---- the schema --------------------------------------------------------- */

#define N_REFS 5
static const char *const ref_specs[N_REFS] = {
    "{}",
    "{\"search\": {\"target_cr\": 10}}",
    "{\"data\": {\"dataset\": \"csv\", \"train\": \"a.csv\", \"test\": \"b.csv\"}}",
    "{\"data\": {\"validation\": 0.1}, \"select\": {}}",
    "{\"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"conv2d\", \"filters\": 4,"
    " \"kernel\": 3}, {\"type\": \"maxpool2d\"}, {\"type\": \"relu\"}, {\"type\": \"flatten\"},"
    " {\"type\": \"dense\"}]}}",
};

static int same_value(json_t *a, json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    if (json_is_array(a) && json_is_array(b)) {
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same_value(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    return json_equal(a, b);
}

/* Walks the properties of schema node `node` at `path`; refs[i] is the
 * canonical object of reference spec i at that path (or NULL). Every
 * default must equal the value the parser used in the first reference
 * that has the field. Returns the number of defaults checked. */
static int walk(json_t *node, const char *path, json_t **refs)
{
    int checked = 0;
    json_t *props = json_object_get(node, "properties");
    const char *key;
    json_t *sub;
    ck_assert_msg(json_is_object(props), "%s: no properties", path);
    ck_assert_msg(json_is_false(json_object_get(node, "additionalProperties")),
                  "%s: additionalProperties is not false", path);
    json_object_foreach(props, key, sub) {
        char p[256];
        snprintf(p, sizeof p, "%s%s%s", path, *path ? "." : "", key);
        ck_assert_msg(json_is_string(json_object_get(sub, "description")),
                      "%s: no description", p);
        json_t *child[N_REFS];
        for (int i = 0; i < N_REFS; i++)
            child[i] = refs[i] ? json_object_get(refs[i], key) : NULL;
        json_t *def = json_object_get(sub, "default");
        if (def) {
            int found = 0;
            for (int i = 0; i < N_REFS && !found; i++) {
                if (!child[i])
                    continue;
                found = 1;
                char *ds = json_dumps(def, JSON_ENCODE_ANY);
                char *vs = json_dumps(child[i], JSON_ENCODE_ANY);
                ck_assert_msg(same_value(def, child[i]),
                              "%s: schema default %s, parser uses %s", p, ds, vs);
                free(ds);
                free(vs);
            }
            ck_assert_msg(found, "%s: no reference spec shows this field", p);
            checked++;
        }
        if (json_object_get(sub, "properties"))
            checked += walk(sub, p, child);
        json_t *items = json_object_get(sub, "items");
        json_t *one_of = items ? json_object_get(items, "oneOf") : NULL;
        size_t bi;
        json_t *branch;
        json_array_foreach(one_of, bi, branch) {
            /* one branch per layer type: check it against that layer of the
             * reference specs */
            const char *type = json_string_value(json_object_get(
                json_object_get(json_object_get(branch, "properties"), "type"),
                "const"));
            ck_assert_ptr_nonnull(type);
            json_t *layer[N_REFS] = {0};
            for (int i = 0; i < N_REFS; i++) {
                size_t li;
                json_t *l;
                json_array_foreach(child[i], li, l) {
                    const char *t = json_string_value(json_object_get(l, "type"));
                    if (!layer[i] && t && strcmp(t, type) == 0)
                        layer[i] = l;
                }
            }
            char pb[300];
            snprintf(pb, sizeof pb, "%s[%s]", p, type);
            checked += walk(branch, pb, layer);
        }
    }
    return checked;
}

/* Every field of the canonical object must be in the schema. */
static void covered(json_t *canon_obj, json_t *node, const char *path)
{
    const char *key;
    json_t *v;
    json_object_foreach(canon_obj, key, v) {
        json_t *sub = json_object_get(json_object_get(node, "properties"), key);
        ck_assert_msg(sub != NULL, "%s.%s: not in the schema", path, key);
        if (json_is_object(v))
            covered(v, sub, key);
    }
}

START_TEST(test_schema)
{
    const char *text = dwf_spec_schema();
    ck_assert_ptr_nonnull(text);
    json_error_t je;
    json_t *schema = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    ck_assert_msg(schema != NULL, "schema: line %d: %s", je.line, je.text);
    ck_assert_str_eq(json_string_value(json_object_get(schema, "$schema")),
                     "https://json-schema.org/draft/2020-12/schema");
    json_t *refs[N_REFS];
    for (int i = 0; i < N_REFS; i++) {
        char *c = canon(ref_specs[i]);
        refs[i] = json_loads(c, 0, &je);
        ck_assert_ptr_nonnull(refs[i]);
        free(c);
        covered(refs[i], schema, "");
    }
    int checked = walk(schema, "", refs);
    /* 5 top-level, 7 data, 6 model, 16 train, 7 prune, 2 select, 4 search,
     * 2 thresholds and 3 of the layers */
    ck_assert_int_eq(checked, 52);
    /* the ranges are the parser's: test a few bounds from the schema */
    json_t *props = json_object_get(schema, "properties");
    json_t *depth = json_object_get(json_object_get(json_object_get(props, "model"),
                                                    "properties"), "depth");
    json_int_t max = json_integer_value(json_object_get(depth, "maximum"));
    char j[128];
    dwf_spec s;
    char field[DWF_FIELD_LEN];
    dwf_err e = {0};
    snprintf(j, sizeof j, "{\"model\": {\"depth\": %lld}}", (long long)max);
    ck_assert_int_eq(parse(j, &s, field, &e), 0);
    dwf_spec_free(&s);
    snprintf(j, sizeof j, "{\"model\": {\"depth\": %lld}}", (long long)max + 1);
    ck_assert_int_eq(parse(j, &s, field, &e), DWF_EINVAL);
    json_t *epochs = json_object_get(json_object_get(json_object_get(props, "train"),
                                                     "properties"), "epochs");
    snprintf(j, sizeof j, "{\"train\": {\"epochs\": %lld}}",
             (long long)json_integer_value(json_object_get(epochs, "maximum")) + 1);
    ck_assert_int_eq(parse(j, &s, field, &e), DWF_EINVAL);
    ck_assert_str_eq(field, "train.epochs");
    for (int i = 0; i < N_REFS; i++)
        json_decref(refs[i]);
    json_decref(schema);
}
END_TEST

/* ---- loading data ------------------------------------------------------ */

static int load(const char *json, dwf_spec *s, dwf_dataset *tr, dwf_dataset *va,
                dwf_dataset *te, dwf_err *e)
{
    char field[DWF_FIELD_LEN];
    int rc = parse(json, s, field, e);
    ck_assert_msg(rc == 0, "%s: %s", json, e->msg);
    return dwf_spec_load_data(s, tr, va, te, e);
}

START_TEST(test_load_fashion_mnist)
{
    if (access(FMNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        fprintf(stderr, "check_spec: %s missing, skipping\n", FMNIST_DIR);
        return;
    }
    dwf_spec s;
    dwf_dataset tr, va, te;
    dwf_err e = {0};
    int rc = load("{\"data\": {\"train_subset\": 500, \"test_subset\": 200, \"validation\": 0.2},"
                  " \"model\": {\"arch\": \"lenet5\"}}", &s, &tr, &va, &te, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    ck_assert_int_eq(tr.n, 400);
    ck_assert_int_eq(va.n, 100);
    ck_assert_int_eq(te.n, 200);
    ck_assert_int_eq(tr.dim, 784);
    ck_assert_int_eq(tr.c, 1);
    ck_assert_int_eq(tr.h, 28);
    ck_assert_int_eq(va.dim, 784);
    ck_assert_int_eq(te.dim, 784);
    ck_assert_int_eq(tr.n_classes, 10);
    ck_assert_int_eq(va.n_classes, 10);
    ck_assert_int_eq(te.n_classes, 10);
    for (int i = 0; i < tr.n; i++)
        ck_assert(tr.y[i] >= 0 && tr.y[i] < 10);
    ck_assert_int_eq(s.arch.in_c, 1);
    ck_assert_int_eq(s.arch.in_h, 28);
    ck_assert_int_eq(s.arch.n_classes, 10);
    ck_assert_int_eq(s.arch.layers[s.arch.n_layers - 1].units, 10);
    ck_assert_int_eq(s.arch.layers[0].out_h, 28); /* resolved */
    /* the split is the seeded one: same seed, same validation labels */
    dwf_spec s2;
    dwf_dataset tr2, va2, te2;
    rc = load("{\"data\": {\"train_subset\": 500, \"test_subset\": 200, \"validation\": 0.2},"
              " \"model\": {\"arch\": \"lenet5\"}}", &s2, &tr2, &va2, &te2, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    ck_assert_int_eq(va2.n, 100);
    ck_assert_int_eq(memcmp(va.y, va2.y, 100 * sizeof *va.y), 0);
    ck_assert_int_eq(memcmp(te.y, te2.y, 200 * sizeof *te.y), 0);
    dwf_dataset_free(&tr2);
    dwf_dataset_free(&va2);
    dwf_dataset_free(&te2);
    dwf_spec_free(&s2);
    dwf_dataset_free(&tr);
    dwf_dataset_free(&va);
    dwf_dataset_free(&te);
    dwf_spec_free(&s);
    /* no validation: val is empty */
    rc = load("{\"data\": {\"train_subset\": 50, \"test_subset\": 20}}", &s, &tr, &va, &te, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    ck_assert_int_eq(tr.n, 50);
    ck_assert_int_eq(va.n, 0);
    ck_assert_int_eq(te.n, 20);
    dwf_dataset_free(&tr);
    dwf_dataset_free(&va);
    dwf_dataset_free(&te);
    dwf_spec_free(&s);
}
END_TEST

/* Writes an IDX file (images: n x 28 x 28, or labels) raw or gzipped. */
static void write_idx(const char *path, int images, int n, int gz)
{
    unsigned char hdr[16] = {0, 0, 8, images ? 3 : 1};
    int nh = images ? 16 : 8;
    hdr[4] = (unsigned char)(n >> 24);
    hdr[5] = (unsigned char)(n >> 16);
    hdr[6] = (unsigned char)(n >> 8);
    hdr[7] = (unsigned char)n;
    if (images)
        hdr[11] = hdr[15] = 28;
    size_t body = images ? (size_t)n * 784 : (size_t)n;
    unsigned char *b = malloc(body);
    for (size_t i = 0; i < body; i++)
        b[i] = (unsigned char)(images ? i * 7 : i % 10);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(gzwrite(f, hdr, (unsigned)nh), nh);
        ck_assert_int_eq(gzwrite(f, b, (unsigned)body), (int)body);
        ck_assert_int_eq(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(hdr, 1, (size_t)nh, f), (size_t)nh);
        ck_assert_uint_eq(fwrite(b, 1, body, f), body);
        ck_assert_int_eq(fclose(f), 0);
    }
    free(b);
}

START_TEST(test_load_mnist_dir)
{
    /* raw training files and gzipped test files: both are found */
    char *dir = make_dir();
    static const char *const names[4] = {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
    char paths[4][PATH_MAX];
    for (int i = 0; i < 4; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%s", dir, names[i]);
        write_idx(paths[i], i % 2 == 0, i < 2 ? 12 : 5, i >= 2);
    }
    dwf_spec s;
    dwf_dataset tr, va, te;
    dwf_err e = {0};
    char j[2 * PATH_MAX];
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"mnist\", \"dir\": \"%s\","
             " \"validation\": 0.25, \"test_subset\": 4}, \"seed\": 3}", dir);
    int rc = load(j, &s, &tr, &va, &te, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    ck_assert_int_eq(tr.n, 9);
    ck_assert_int_eq(va.n, 3);
    ck_assert_int_eq(te.n, 4);
    ck_assert_int_eq(te.dim, 784);
    ck_assert_int_eq(te.y[3], 3);
    ck_assert_int_eq(tr.n_classes, 10);
    ck_assert_int_eq(s.arch.n_classes, 10);
    /* with roots: inside */
    const char *roots[] = {dir};
    dwf_spec s2;
    char field[DWF_FIELD_LEN];
    ck_assert_int_eq(dwf_spec_parse(j, strlen(j), roots, 1, &s2, field, &e), 0);
    dwf_spec_free(&s2);
    /* a file of the folder linked to outside the roots */
    unlink(paths[1]);
    ck_assert_int_eq(symlink("/tmp", paths[1]), 0);
    ck_assert_int_eq(dwf_spec_parse(j, strlen(j), roots, 1, &s2, field, &e), DWF_EINVAL);
    ck_assert_str_eq(field, "data.dir");
    ck_assert_msg(strstr(e.msg, "outside the allowed data roots") != NULL, "%s", e.msg);
    dwf_dataset_free(&tr);
    dwf_dataset_free(&va);
    dwf_dataset_free(&te);
    dwf_spec_free(&s);
    for (int i = 0; i < 4; i++)
        unlink(paths[i]);
    rmdir(dir);
    free(dir);
}
END_TEST

START_TEST(test_load_errors)
{
    char *dir = make_dir();
    dwf_spec s;
    dwf_dataset tr, va, te;
    dwf_err e = {0};
    char j[2 * PATH_MAX];
    /* an empty mnist folder: the message names the file */
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"mnist\", \"dir\": \"%s\"}}", dir);
    int rc = load(j, &s, &tr, &va, &te, &e);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(e.msg, "train-images-idx3-ubyte") != NULL, "%s", e.msg);
    ck_assert_int_eq(tr.n, 0);
    ck_assert_ptr_null(tr.y);
    dwf_spec_free(&s);
    /* idx files that do not exist */
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"idx\", \"train_images\": \"%s/ti\","
             " \"train_labels\": \"%s/tl\", \"test_images\": \"%s/si\", \"test_labels\": \"%s/sl\"}}",
             dir, dir, dir, dir);
    rc = load(j, &s, &tr, &va, &te, &e);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(e.msg, dir) != NULL, "%s", e.msg);
    dwf_spec_free(&s);
    rmdir(dir);
    free(dir);
}
END_TEST

START_TEST(test_load_csv)
{
    char *dir = make_dir();
    char tr_path[PATH_MAX], te_path[PATH_MAX], bad_path[PATH_MAX], wide_path[PATH_MAX];
    snprintf(tr_path, sizeof tr_path, "%s/train.csv", dir);
    snprintf(te_path, sizeof te_path, "%s/test.csv", dir);
    snprintf(bad_path, sizeof bad_path, "%s/bad.csv", dir);
    snprintf(wide_path, sizeof wide_path, "%s/wide.csv", dir);
    /* 20 samples, 3 features, labels 0..2 in the first column */
    char text[4096];
    size_t n = (size_t)snprintf(text, sizeof text, "label,a,b,c\n");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%d,%d,%g,%d\n", i % 3, i,
                              0.5 * i, -i);
    write_text(tr_path, text);
    write_text(te_path, "2,1,1,1\n0,2,2,2\n1,3,3,3\n1,4,4,4\n");
    write_text(bad_path, "0,1,1,1\n5,2,2,2\n");
    write_text(wide_path, "0,1,1,1,1\n");
    dwf_spec s;
    dwf_dataset tr, va, te;
    dwf_err e = {0};
    char j[4 * PATH_MAX];
    snprintf(j, sizeof j,
             "{\"data\": {\"dataset\": \"csv\", \"train\": \"%s\", \"test\": \"%s\","
             " \"validation\": 0.25}, \"model\": {\"arch\": \"custom\", \"layers\": ["
             "{\"type\": \"dense\", \"units\": 8}, {\"type\": \"relu\"}, {\"type\": \"dense\"}]}}",
             tr_path, te_path);
    int rc = load(j, &s, &tr, &va, &te, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    ck_assert_int_eq(tr.n, 15);
    ck_assert_int_eq(va.n, 5);
    ck_assert_int_eq(te.n, 4);
    ck_assert_int_eq(tr.dim, 3);
    ck_assert_int_eq(tr.n_classes, 3);
    ck_assert_int_eq(te.n_classes, 3);
    ck_assert_int_eq(s.arch.in_c * s.arch.in_h * s.arch.in_w, 3);
    ck_assert_int_eq(s.arch.n_classes, 3);
    ck_assert_int_eq(s.arch.layers[2].units, 3);
    ck_assert_int_eq(s.arch.layers[0].in_c, 3);
    ck_assert_int_eq(te.y[0], 2);
    dwf_dataset_free(&tr);
    dwf_dataset_free(&va);
    dwf_dataset_free(&te);
    dwf_spec_free(&s);

    /* the default mlp on the same data, label in the last column */
    char text2[4096];
    n = 0;
    for (int i = 0; i < 12; i++)
        n += (size_t)snprintf(text2 + n, sizeof text2 - n, "%d,%d,%d\n", i, 2 * i, i % 4);
    write_text(tr_path, text2);
    write_text(te_path, "1,2,3\n");
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"csv\", \"train\": \"%s\", \"test\": \"%s\","
             " \"label_column\": -1, \"train_subset\": 10}}", tr_path, te_path);
    rc = load(j, &s, &tr, &va, &te, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    ck_assert_int_eq(tr.n, 10);
    ck_assert_int_eq(tr.dim, 2);
    ck_assert_int_eq(tr.n_classes, 4);
    ck_assert_int_eq(s.arch.layers[s.arch.n_layers - 1].units, 4);
    ck_assert_int_eq(s.arch.layers[1].units, 300);
    dwf_dataset_free(&tr);
    dwf_dataset_free(&va);
    dwf_dataset_free(&te);
    dwf_spec_free(&s);

    /* a test label the training set does not have: names the test file */
    write_text(tr_path, text);
    write_text(te_path, "2,1,1,1\n0,2,2,2\n");
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"csv\", \"train\": \"%s\", \"test\": \"%s\"}}",
             tr_path, bad_path);
    rc = load(j, &s, &tr, &va, &te, &e);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(e.msg, "bad.csv") != NULL, "%s", e.msg);
    ck_assert_ptr_null(tr.y);
    ck_assert_ptr_null(te.y);
    dwf_spec_free(&s);
    /* test rows of another width */
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"csv\", \"train\": \"%s\", \"test\": \"%s\"}}",
             tr_path, wide_path);
    rc = load(j, &s, &tr, &va, &te, &e);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(e.msg, "wide.csv") != NULL, "%s", e.msg);
    dwf_spec_free(&s);
    /* a custom network whose output is not the class count */
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"csv\", \"train\": \"%s\", \"test\": \"%s\"},"
             " \"model\": {\"arch\": \"custom\", \"layers\": [{\"type\": \"dense\", \"units\": 10}]}}",
             tr_path, te_path);
    rc = load(j, &s, &tr, &va, &te, &e);
    ck_assert_int_eq(rc, DWF_EINVAL);
    ck_assert_msg(strstr(e.msg, "model.layers") && strstr(e.msg, "3 classes"), "%s", e.msg);
    ck_assert_ptr_null(tr.y);
    dwf_spec_free(&s);
    /* lenet5 on flat data cannot be built */
    snprintf(j, sizeof j, "{\"data\": {\"dataset\": \"csv\", \"train\": \"%s\", \"test\": \"%s\"},"
             " \"model\": {\"arch\": \"lenet5\"}}", tr_path, te_path);
    rc = load(j, &s, &tr, &va, &te, &e);
    ck_assert_int_eq(rc, DWF_EINVAL);
    ck_assert_msg(strstr(e.msg, "model.arch") != NULL, "%s", e.msg);
    dwf_spec_free(&s);
    unlink(tr_path);
    unlink(te_path);
    unlink(bad_path);
    unlink(wide_path);
    rmdir(dir);
    free(dir);
}
END_TEST

static Suite *spec_suite(void)
{
    Suite *s = suite_create("spec");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_every_field);
    tcase_add_test(tc, test_custom_layers);
    tcase_add_loop_test(tc, test_errors, 0, (int)(sizeof bad / sizeof *bad));
    tcase_add_test(tc, test_roots);
    tcase_add_loop_test(tc, test_canonical_roundtrip, 0, 8);
    tcase_add_test(tc, test_canonical_values);
    tcase_add_test(tc, test_schema);
    suite_add_tcase(s, tc);
    TCase *td = tcase_create("data");
    tcase_set_timeout(td, 60);
    tcase_add_test(td, test_load_fashion_mnist);
    tcase_add_test(td, test_load_mnist_dir);
    tcase_add_test(td, test_load_errors);
    tcase_add_test(td, test_load_csv);
    suite_add_tcase(s, td);
    return s;
}

int main(void)
{
    return tu_run(spec_suite());
}
