//! The spec XML as a model: constants, domains resolved to wire types, classes, methods, fields
//! and content properties. Additions the XML lacks are made here, by hand, in [`add_extensions`].

use std::collections::HashMap;

/// An AMQP wire type (what a domain finally resolves to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Bit,
    Octet,
    Short,
    Long,
    LongLong,
    ShortStr,
    LongStr,
    Timestamp,
    Table,
}

impl Ty {
    fn from_name(name: &str) -> Option<Ty> {
        Some(match name {
            "bit" => Ty::Bit,
            "octet" => Ty::Octet,
            "short" => Ty::Short,
            "long" => Ty::Long,
            "longlong" => Ty::LongLong,
            "shortstr" => Ty::ShortStr,
            "longstr" => Ty::LongStr,
            "timestamp" => Ty::Timestamp,
            "table" => Ty::Table,
            _ => return None,
        })
    }

    pub fn spec_name(self) -> &'static str {
        match self {
            Ty::Bit => "bit",
            Ty::Octet => "octet",
            Ty::Short => "short",
            Ty::Long => "long",
            Ty::LongLong => "longlong",
            Ty::ShortStr => "shortstr",
            Ty::LongStr => "longstr",
            Ty::Timestamp => "timestamp",
            Ty::Table => "table",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Constant {
    /// Spec name, e.g. `not-found`.
    pub name: String,
    pub value: u32,
    /// `soft-error`, `hard-error`, or none.
    pub class: Option<String>,
    /// Added by hand in [`add_extensions`] rather than read from the XML.
    pub added: bool,
}

#[derive(Debug, Clone)]
pub struct Field {
    /// Spec name, e.g. `routing-key`.
    pub name: String,
    pub ty: Ty,
    /// `reserved-1`, `reserved-2`, …: on the wire, never in a struct.
    pub reserved: bool,
}

#[derive(Debug, Clone)]
pub struct Method {
    pub name: String,
    pub index: u16,
    pub content: bool,
    pub synchronous: bool,
    pub fields: Vec<Field>,
    pub added: bool,
}

#[derive(Debug, Clone)]
pub struct Class {
    pub name: String,
    pub index: u16,
    /// Content properties (only `basic` has any).
    pub properties: Vec<Field>,
    pub methods: Vec<Method>,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub constants: Vec<Constant>,
    pub classes: Vec<Class>,
}

fn attr<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Result<&'a str, String> {
    node.attribute(name).ok_or_else(|| {
        format!(
            "<{}> at byte {} has no `{name}` attribute",
            node.tag_name().name(),
            node.range().start
        )
    })
}

fn elements<'a, 'input>(
    parent: roxmltree::Node<'a, 'input>,
    tag: &str,
) -> Vec<roxmltree::Node<'a, 'input>> {
    parent
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == tag)
        .collect()
}

fn number<T: std::str::FromStr>(node: roxmltree::Node<'_, '_>, name: &str) -> Result<T, String> {
    let raw = attr(node, name)?;
    raw.parse().map_err(|_| {
        format!(
            "`{name}=\"{raw}\"` on <{}> is not a number",
            node.tag_name().name()
        )
    })
}

impl Spec {
    pub fn parse(xml: &str) -> Result<Spec, String> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| format!("spec XML: {e}"))?;
        let amqp = doc.root_element();
        if amqp.tag_name().name() != "amqp" {
            return Err("spec XML: root element is not <amqp>".into());
        }

        let mut domains: HashMap<String, String> = HashMap::new();
        for d in elements(amqp, "domain") {
            domains.insert(attr(d, "name")?.to_owned(), attr(d, "type")?.to_owned());
        }
        // A field names either a domain or (for reserved fields and a few others) a type.
        let resolve = |f: roxmltree::Node<'_, '_>| -> Result<Ty, String> {
            let mut name = match f.attribute("domain") {
                Some(d) => d,
                None => attr(f, "type")?,
            };
            for _ in 0..16 {
                if let Some(ty) = Ty::from_name(name) {
                    // A domain named like a primitive maps to it (the XML declares those too).
                    if domains.get(name).is_none_or(|t| t == name) {
                        return Ok(ty);
                    }
                }
                name = domains
                    .get(name)
                    .ok_or_else(|| format!("unknown domain `{name}`"))?;
            }
            Err(format!("domain `{name}` does not resolve to a type"))
        };
        let field = |f: roxmltree::Node<'_, '_>| -> Result<Field, String> {
            let name = attr(f, "name")?.to_owned();
            Ok(Field {
                reserved: name.starts_with("reserved-") || f.attribute("reserved") == Some("1"),
                ty: resolve(f)?,
                name,
            })
        };

        let mut constants = Vec::new();
        for c in elements(amqp, "constant") {
            constants.push(Constant {
                name: attr(c, "name")?.to_owned(),
                value: number(c, "value")?,
                class: c.attribute("class").map(str::to_owned),
                added: false,
            });
        }

        let mut classes = Vec::new();
        for c in elements(amqp, "class") {
            let mut methods = Vec::new();
            for m in elements(c, "method") {
                methods.push(Method {
                    name: attr(m, "name")?.to_owned(),
                    index: number(m, "index")?,
                    content: m.attribute("content") == Some("1"),
                    synchronous: m.attribute("synchronous") == Some("1"),
                    fields: elements(m, "field")
                        .into_iter()
                        .map(field)
                        .collect::<Result<_, _>>()?,
                    added: false,
                });
            }
            classes.push(Class {
                name: attr(c, "name")?.to_owned(),
                index: number(c, "index")?,
                properties: elements(c, "field")
                    .into_iter()
                    .map(field)
                    .collect::<Result<_, _>>()?,
                methods,
            });
        }

        let mut spec = Spec { constants, classes };
        add_extensions(&mut spec)?;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), String> {
        let mut seen = HashMap::new();
        for c in &self.classes {
            for m in &c.methods {
                if let Some(other) = seen.insert((c.index, m.index), &m.name) {
                    return Err(format!(
                        "{}.{} and {}.{other} share ids {}/{}",
                        c.name, m.name, c.name, c.index, m.index
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What RabbitMQ speaks but `amqp0-9-1-rabbit.xml` does not say. Added by hand, here and only
/// here; the generated code marks each addition.
///
/// - `connection.blocked` (10/60, `reason: shortstr`) and `connection.unblocked` (10/61):
///   RabbitMQ's connection.blocked extension, sent by the server when a resource alarm holds
///   publishers back.
/// - `connection.update-secret` (10/70, `new-secret: longstr`, `reason: shortstr`) and
///   `connection.update-secret-ok` (10/71): credential refresh (e.g. OAuth 2 tokens).
/// - The `no-route` reply code (312, soft error), which RabbitMQ returns for unroutable
///   mandatory messages; the XML dropped it along with `immediate`.
fn add_extensions(spec: &mut Spec) -> Result<(), String> {
    let connection = spec
        .classes
        .iter_mut()
        .find(|c| c.name == "connection")
        .ok_or("spec has no connection class")?;
    let added = |name: &str, index: u16, synchronous: bool, fields: &[(&str, Ty)]| Method {
        name: name.to_owned(),
        index,
        content: false,
        synchronous,
        fields: fields
            .iter()
            .map(|&(name, ty)| Field {
                name: name.to_owned(),
                ty,
                reserved: false,
            })
            .collect(),
        added: true,
    };
    for m in [
        added("blocked", 60, false, &[("reason", Ty::ShortStr)]),
        added("unblocked", 61, false, &[]),
        added(
            "update-secret",
            70,
            true,
            &[("new-secret", Ty::LongStr), ("reason", Ty::ShortStr)],
        ),
        added("update-secret-ok", 71, true, &[]),
    ] {
        if !connection.methods.iter().any(|x| x.name == m.name) {
            connection.methods.push(m);
        }
    }

    if !spec.constants.iter().any(|c| c.name == "no-route") {
        let no_route = Constant {
            name: "no-route".into(),
            value: 312,
            class: Some("soft-error".into()),
            added: true,
        };
        // Keep the reply codes in numeric order.
        let at = spec
            .constants
            .iter()
            .position(|c| c.class.is_some() && c.value > no_route.value)
            .unwrap_or(spec.constants.len());
        spec.constants.insert(at, no_route);
    }
    Ok(())
}
