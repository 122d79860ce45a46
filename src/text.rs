//! Text in and out of `archc generate`: a Hugging Face tokenizer (from a `tokenizer.json`, or
//! built from a GGUF file's `tokenizer.ggml.*` metadata as transformers builds it) and the
//! model's chat template, rendered with minijinja as transformers renders it with Jinja.

use std::path::Path;

use archc_runtime::gguf::{GgufFile, Value};
use tokenizers::models::bpe::BPE;
use tokenizers::{AddedToken, Tokenizer};

/// Steps of template evaluation allowed: a template that loops forever is an error.
const TEMPLATE_FUEL: u64 = 1_000_000;

/// A tokenizer with what generation needs besides: the chat template and the special tokens
/// it names.
pub struct Text {
    tokenizer: Tokenizer,
    /// The Jinja chat template, if the model has one.
    chat_template: Option<String>,
    /// The beginning- and end-of-sequence tokens' text (for templates that print them).
    bos: String,
    eos: String,
}

impl Text {
    /// The tokenizer of a GGUF file (`tokenizer.ggml.model` `gpt2`: byte-level BPE).
    pub fn from_gguf(file: &GgufFile) -> Result<Text, String> {
        let at = || file.path().display().to_string();
        let model = file.str("tokenizer.ggml.model").unwrap_or("none");
        if model != "gpt2" {
            return Err(format!(
                "{}: tokenizer `{model}` is not supported from GGUF metadata (byte-level BPE, `gpt2`, is); pass --tokenizer tokenizer.json",
                at()
            ));
        }
        let strings = |key: &str| -> Result<Vec<String>, String> {
            match file.metadata.get(key) {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| match v {
                        Value::Str(s) => Ok(s.clone()),
                        _ => Err(format!("{}: `{key}` holds a non-string", at())),
                    })
                    .collect(),
                _ => Err(format!("{}: `{key}` is missing", at())),
            }
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .iter()
            .filter_map(|m| m.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| format!("{}: the tokenizer cannot be built: {e}", at()))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let byte_level = tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true);
        tokenizer.with_pre_tokenizer(Some(byte_level));
        tokenizer.with_decoder(Some(byte_level));
        // Control and user-defined tokens (types 3 and 4) are matched whole in the text.
        let types: Vec<i64> = match file.metadata.get("tokenizer.ggml.token_type") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| if let Value::Int(t) = v { *t } else { 1 })
                .collect(),
            _ => Vec::new(),
        };
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == 3 || t == 4)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        tokenizer.add_special_tokens(&special);
        let token = |key: &str| {
            file.int(key)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| tokens.get(i).cloned())
                .unwrap_or_default()
        };
        Ok(Text {
            tokenizer,
            chat_template: file.str("tokenizer.chat_template").map(str::to_string),
            bos: token("tokenizer.ggml.bos_token_id"),
            eos: token("tokenizer.ggml.eos_token_id"),
        })
    }

    /// A `tokenizer.json`, with the chat template and special tokens of the
    /// `tokenizer_config.json` beside it, if there is one.
    pub fn from_file(path: &Path) -> Result<Text, String> {
        let tokenizer =
            Tokenizer::from_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config = path.with_file_name("tokenizer_config.json");
        let json: serde_json::Value = archc_runtime::files::read_text(&config, 16 << 20)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let field = |k: &str| match json.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or("")
                .to_string(),
            None => String::new(),
        };
        Ok(Text {
            tokenizer,
            chat_template: json
                .get("chat_template")
                .and_then(|t| t.as_str())
                .map(str::to_string),
            bos: field("bos_token"),
            eos: field("eos_token"),
        })
    }

    /// The ids of `text` (special tokens in it are matched whole; none are added).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, String> {
        let e = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| format!("the prompt cannot be tokenized: {e}"))?;
        Ok(e.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[i64]) -> String {
        let ids: Vec<u32> = ids.iter().filter_map(|&i| u32::try_from(i).ok()).collect();
        self.tokenizer.decode(&ids, true).unwrap_or_default()
    }

    /// The prompt a chat model sees for one user message, with the turn of the assistant
    /// opened (`add_generation_prompt`).
    pub fn chat(&self, user: &str) -> Result<String, String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or("the model has no chat template (drop --chat to give the prompt as it is)")?;
        let mut env = minijinja::Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let bad = |e: minijinja::Error| format!("the chat template fails: {e}");
        env.add_template("chat", template).map_err(bad)?;
        let messages = vec![minijinja::context! { role => "user", content => user }];
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => self.bos.clone(),
                    eos_token => self.eos.clone(),
                })
            })
            .map_err(bad)
    }
}
