//! Kubernetes documents (JSON values) printed as one multi-document YAML stream.

use yaml_rust2::YamlEmitter;
use yaml_rust2::yaml::{Hash, Yaml};

/// The documents as `---`-separated YAML, after `comments` as `#` lines.
pub fn to_yaml(comments: &[String], documents: &[serde_json::Value]) -> String {
    let mut out = String::new();
    for c in comments {
        for line in c.lines() {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
    }
    for doc in documents {
        let mut text = String::new();
        let mut emitter = YamlEmitter::new(&mut text);
        emitter.multiline_strings(true);
        // Emitting into a String fails only on a formatter error, which a String never has.
        if emitter.dump(&to_yaml_value(doc)).is_ok() {
            out.push_str(&text);
            out.push('\n');
        }
    }
    out
}

fn to_yaml_value(v: &serde_json::Value) -> Yaml {
    use serde_json::Value;
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(a) => Yaml::Array(a.iter().map(to_yaml_value).collect()),
        Value::Object(o) => {
            let mut h = Hash::new();
            for (k, v) in o {
                h.insert(Yaml::String(k.clone()), to_yaml_value(v));
            }
            Yaml::Hash(h)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What is printed reads back as the same values (strings that look like numbers or
    /// booleans stay strings), and comments come first.
    #[test]
    fn documents_read_back_whole() {
        let docs = vec![
            json!({"kind": "Pod", "metadata": {"name": "p", "labels": {"v": "0.1.0", "b": "true", "n": "1000"}}, "spec": {"x": [1, 2], "y": null, "s": "two\nlines"}}),
            json!({"kind": "PersistentVolumeClaim", "spec": {"ok": false}}),
        ];
        let text = to_yaml(&["a note\nover two lines".into()], &docs);
        assert!(text.starts_with("# a note\n# over two lines\n---\n"), "{text}");
        let back = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0]["metadata"]["labels"]["v"].as_str(), Some("0.1.0"));
        assert_eq!(back[0]["metadata"]["labels"]["b"].as_str(), Some("true"));
        assert_eq!(back[0]["metadata"]["labels"]["n"].as_str(), Some("1000"));
        assert_eq!(back[0]["spec"]["x"][1].as_i64(), Some(2));
        assert_eq!(back[0]["spec"]["s"].as_str(), Some("two\nlines"));
        assert_eq!(back[1]["spec"]["ok"].as_bool(), Some(false));
    }
}
