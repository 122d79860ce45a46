//! `archc import hf`: a Hugging Face `config.json` → a `.arch` file whose weight names match
//! that checkpoint's `model.safetensors`.
//!
//! Each family is one template written the way the examples are. A config option a template
//! does not implement is an error naming the field: a model is never silently wrong.

mod config;
mod decoders;
mod encoders;
mod gguf;
mod hybrids;
mod rope;
mod ssm;

use std::fmt::Write;

use config::Cfg;
pub use config::ImportError;
use decoders::LlamaLike;

/// The families `import_hf` understands, by `model_type`.
pub const FAMILIES: &[&str] = &[
    "llama", "mistral", "qwen2", "qwen3", "gpt2", "bert", "ijepa", "mamba", "mamba2", "jamba",
    "bamba", "zamba2",
];

/// Translates a GGUF file's metadata into `.arch` source whose weight names `--weights
/// FILE.gguf` reads (see [`gguf`]). `source` names the file in errors and the header.
pub fn import_gguf(
    file: &archc_runtime::gguf::GgufFile,
    source: &str,
) -> Result<String, ImportError> {
    let config = gguf::config_of(file, source)?;
    let arch = import_hf(&config, source)?;
    // The template's header speaks of a config.json; say where the model came from.
    let body: String = arch
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let name = header_name(source);
    Ok(format!(
        "# Imported by `archc import gguf` from {name}.\n# Weight names are Hugging Face's; `--weights` reads the GGUF file by them.\n{body}"
    ))
}

/// A file's name, escaped for a comment (a line break would end it).
fn header_name(source: &str) -> String {
    std::path::Path::new(source)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| source.to_string())
        .escape_debug()
        .to_string()
}

/// Translates the text of a `config.json` into `.arch` source. `source` names the file in
/// errors and, escaped, in the header comment.
pub fn import_hf(json: &str, source: &str) -> Result<String, ImportError> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| ImportError {
        file: source.to_string(),
        field: String::new(),
        message: format!("not valid JSON: {e}"),
    })?;
    let cfg = Cfg::new(&value, source)?;
    let model_type = cfg.str("model_type")?;
    let body = match model_type.as_str() {
        "llama" => decoders::llama(&cfg, LlamaLike::Llama)?,
        "mistral" => decoders::llama(&cfg, LlamaLike::Mistral)?,
        "qwen2" => decoders::llama(&cfg, LlamaLike::Qwen2)?,
        "qwen3" => decoders::llama(&cfg, LlamaLike::Qwen3)?,
        "gpt2" => decoders::gpt2(&cfg)?,
        "bert" => encoders::bert(&cfg)?,
        "ijepa" => encoders::ijepa(&cfg)?,
        "mamba" => ssm::mamba(&cfg)?,
        "mamba2" => ssm::mamba2(&cfg)?,
        "jamba" => hybrids::jamba(&cfg)?,
        "bamba" => hybrids::bamba(&cfg)?,
        "zamba2" => hybrids::zamba2(&cfg)?,
        other => {
            return Err(cfg.error(
                "model_type",
                format!(
                    "`{other}` is not supported; supported families: {}",
                    FAMILIES.join(", ")
                ),
            ))
        }
    };
    // The name goes into a comment, which a line break would end: escape what is not plain.
    let file = header_name(source);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported by `archc import hf` from {file} (model_type \"{model_type}\")."
    );
    let _ = writeln!(
        out,
        "# Weight names match the checkpoint's model.safetensors."
    );
    out.push_str(&body);
    Ok(out)
}

/// Formats config constants as a `config { ... }` block, one per line.
fn config_block(entries: &[(&str, String)]) -> String {
    let mut s = String::from("  config {\n");
    for (k, v) in entries {
        let _ = writeln!(s, "    {k} = {v},");
    }
    s.push_str("  }\n");
    s
}

/// A float as `.arch` source (always with a `.` or an exponent).
fn float(v: f64) -> String {
    format!("{v:?}")
}

/// The prelude block for a Hugging Face activation name.
fn activation(cfg: &Cfg, field: &str) -> Result<&'static str, ImportError> {
    match cfg.str(field)?.as_str() {
        "silu" | "swish" => Ok("silu"),
        "gelu" => Ok("gelu"),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok("gelu_tanh"),
        "relu" => Ok("relu"),
        other => Err(cfg.error(
            field,
            format!("activation `{other}` is not supported (silu, gelu, gelu_new, relu are)"),
        )),
    }
}

/// The embedding and LM head lines of a causal LM: a shared table when tied, two weights when
/// not.
fn embed_and_head(tied: bool, embed: &str, norm: &str, head: &str) -> (String, String) {
    if tied {
        (
            format!(
                "  param embed: [vocab, dim] @{embed}.weight\n  h = gather(embed, input_ids)\n"
            ),
            format!("  output logits = matmul({norm}, transpose(embed))\n"),
        )
    } else {
        (
            format!("  h = embedding(input_ids, vocab, dim) @{embed}\n"),
            format!("  output logits = linear({norm}, vocab, bias = false) @{head}\n"),
        )
    }
}
