//! `amq-protocol` (the codec under lapin) as an oracle.
//!
//! For a set of methods and for the basic properties, values are encoded by us and parsed by
//! amq-protocol (and the other way round) and compared field by field, through a hand-written
//! translation into amq-protocol's structs. For every method, our bytes parsed and re-encoded by
//! amq-protocol must come back identical.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{self as amq, basic::AMQPProperties, AMQPClass};
use amq_protocol::types as at;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::generated::arbitrary;
use crate::tests::properties::all_set;
use crate::*;

/// Methods compared field by field.
const ORACLE_SET: &[&str] = &[
    "connection.start",
    "connection.start-ok",
    "connection.tune",
    "connection.tune-ok",
    "connection.open",
    "connection.close",
    "connection.blocked",
    "connection.update-secret",
    "channel.open",
    "channel.close",
    "exchange.declare",
    "exchange.bind",
    "queue.declare",
    "queue.declare-ok",
    "queue.bind",
    "basic.qos",
    "basic.consume",
    "basic.publish",
    "basic.return",
    "basic.deliver",
    "basic.get-ok",
    "basic.ack",
    "basic.nack",
    "basic.reject",
    "confirm.select",
];

fn ss(s: &ShortString) -> at::ShortString {
    s.as_str().into()
}

fn ls(s: &LongString) -> at::LongString {
    s.as_bytes().to_vec().into()
}

fn value(v: &FieldValue) -> at::AMQPValue {
    use at::AMQPValue as A;
    match v {
        FieldValue::Bool(x) => A::Boolean(*x),
        FieldValue::I8(x) => A::ShortShortInt(*x),
        FieldValue::U8(x) => A::ShortShortUInt(*x),
        FieldValue::I16(x) => A::ShortInt(*x),
        FieldValue::U16(x) => A::ShortUInt(*x),
        FieldValue::I32(x) => A::LongInt(*x),
        FieldValue::U32(x) => A::LongUInt(*x),
        FieldValue::I64(x) => A::LongLongInt(*x),
        FieldValue::F32(x) => A::Float(*x),
        FieldValue::F64(x) => A::Double(*x),
        FieldValue::Decimal(d) => A::DecimalValue(at::DecimalValue {
            scale: d.scale,
            value: d.value,
        }),
        FieldValue::LongString(s) => A::LongString(ls(s)),
        FieldValue::Array(a) => A::FieldArray(a.iter().map(value).collect::<Vec<_>>().into()),
        FieldValue::Timestamp(t) => A::Timestamp(*t),
        FieldValue::Table(t) => A::FieldTable(table(t)),
        FieldValue::Void => A::Void,
        FieldValue::ByteArray(b) => A::ByteArray(b.to_vec().into()),
    }
}

fn table(t: &FieldTable) -> at::FieldTable {
    let mut out = at::FieldTable::default();
    for (k, v) in t.iter() {
        out.insert(ss(k), value(v));
    }
    out
}

/// Our method as amq-protocol's, for the methods in [`ORACLE_SET`].
fn to_amq(m: &Method) -> Option<AMQPClass> {
    use amq::{
        basic as b, channel as ch, confirm as cf, connection as c, exchange as e, queue as q,
    };
    Some(match m {
        Method::ConnectionStart(x) => AMQPClass::Connection(c::AMQPMethod::Start(c::Start {
            version_major: x.version_major,
            version_minor: x.version_minor,
            server_properties: table(&x.server_properties),
            mechanisms: ls(&x.mechanisms),
            locales: ls(&x.locales),
        })),
        Method::ConnectionStartOk(x) => AMQPClass::Connection(c::AMQPMethod::StartOk(c::StartOk {
            client_properties: table(&x.client_properties),
            mechanism: ss(&x.mechanism),
            response: ls(&x.response),
            locale: ss(&x.locale),
        })),
        Method::ConnectionTune(x) => AMQPClass::Connection(c::AMQPMethod::Tune(c::Tune {
            channel_max: x.channel_max,
            frame_max: x.frame_max,
            heartbeat: x.heartbeat,
        })),
        Method::ConnectionTuneOk(x) => AMQPClass::Connection(c::AMQPMethod::TuneOk(c::TuneOk {
            channel_max: x.channel_max,
            frame_max: x.frame_max,
            heartbeat: x.heartbeat,
        })),
        Method::ConnectionOpen(x) => AMQPClass::Connection(c::AMQPMethod::Open(c::Open {
            virtual_host: ss(&x.virtual_host),
        })),
        Method::ConnectionClose(x) => AMQPClass::Connection(c::AMQPMethod::Close(c::Close {
            reply_code: x.reply_code,
            reply_text: ss(&x.reply_text),
            class_id: x.class_id,
            method_id: x.method_id,
        })),
        Method::ConnectionBlocked(x) => AMQPClass::Connection(c::AMQPMethod::Blocked(c::Blocked {
            reason: ss(&x.reason),
        })),
        Method::ConnectionUpdateSecret(x) => {
            AMQPClass::Connection(c::AMQPMethod::UpdateSecret(c::UpdateSecret {
                new_secret: ls(&x.new_secret),
                reason: ss(&x.reason),
            }))
        }
        Method::ChannelOpen(channel::Open {}) => {
            AMQPClass::Channel(ch::AMQPMethod::Open(ch::Open {}))
        }
        Method::ChannelClose(x) => AMQPClass::Channel(ch::AMQPMethod::Close(ch::Close {
            reply_code: x.reply_code,
            reply_text: ss(&x.reply_text),
            class_id: x.class_id,
            method_id: x.method_id,
        })),
        Method::ExchangeDeclare(x) => AMQPClass::Exchange(e::AMQPMethod::Declare(e::Declare {
            exchange: ss(&x.exchange),
            kind: ss(&x.kind),
            passive: x.passive,
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            nowait: x.no_wait,
            arguments: table(&x.arguments),
        })),
        Method::ExchangeBind(x) => AMQPClass::Exchange(e::AMQPMethod::Bind(e::Bind {
            destination: ss(&x.destination),
            source: ss(&x.source),
            routing_key: ss(&x.routing_key),
            nowait: x.no_wait,
            arguments: table(&x.arguments),
        })),
        Method::QueueDeclare(x) => AMQPClass::Queue(q::AMQPMethod::Declare(q::Declare {
            queue: ss(&x.queue),
            passive: x.passive,
            durable: x.durable,
            exclusive: x.exclusive,
            auto_delete: x.auto_delete,
            nowait: x.no_wait,
            arguments: table(&x.arguments),
        })),
        Method::QueueDeclareOk(x) => AMQPClass::Queue(q::AMQPMethod::DeclareOk(q::DeclareOk {
            queue: ss(&x.queue),
            message_count: x.message_count,
            consumer_count: x.consumer_count,
        })),
        Method::QueueBind(x) => AMQPClass::Queue(q::AMQPMethod::Bind(q::Bind {
            queue: ss(&x.queue),
            exchange: ss(&x.exchange),
            routing_key: ss(&x.routing_key),
            nowait: x.no_wait,
            arguments: table(&x.arguments),
        })),
        // amq-protocol drops prefetch-size (RabbitMQ does not implement it), so only a zero one
        // can be compared.
        Method::BasicQos(x) if x.prefetch_size == 0 => {
            AMQPClass::Basic(b::AMQPMethod::Qos(b::Qos {
                prefetch_count: x.prefetch_count,
                global: x.global,
            }))
        }
        Method::BasicConsume(x) => AMQPClass::Basic(b::AMQPMethod::Consume(b::Consume {
            queue: ss(&x.queue),
            consumer_tag: ss(&x.consumer_tag),
            no_local: x.no_local,
            no_ack: x.no_ack,
            exclusive: x.exclusive,
            nowait: x.no_wait,
            arguments: table(&x.arguments),
        })),
        Method::BasicPublish(x) => AMQPClass::Basic(b::AMQPMethod::Publish(b::Publish {
            exchange: ss(&x.exchange),
            routing_key: ss(&x.routing_key),
            mandatory: x.mandatory,
            immediate: x.immediate,
        })),
        Method::BasicReturn(x) => AMQPClass::Basic(b::AMQPMethod::Return(b::Return {
            reply_code: x.reply_code,
            reply_text: ss(&x.reply_text),
            exchange: ss(&x.exchange),
            routing_key: ss(&x.routing_key),
        })),
        Method::BasicDeliver(x) => AMQPClass::Basic(b::AMQPMethod::Deliver(b::Deliver {
            consumer_tag: ss(&x.consumer_tag),
            delivery_tag: x.delivery_tag,
            redelivered: x.redelivered,
            exchange: ss(&x.exchange),
            routing_key: ss(&x.routing_key),
        })),
        Method::BasicGetOk(x) => AMQPClass::Basic(b::AMQPMethod::GetOk(b::GetOk {
            delivery_tag: x.delivery_tag,
            redelivered: x.redelivered,
            exchange: ss(&x.exchange),
            routing_key: ss(&x.routing_key),
            message_count: x.message_count,
        })),
        Method::BasicAck(x) => AMQPClass::Basic(b::AMQPMethod::Ack(b::Ack {
            delivery_tag: x.delivery_tag,
            multiple: x.multiple,
        })),
        Method::BasicNack(x) => AMQPClass::Basic(b::AMQPMethod::Nack(b::Nack {
            delivery_tag: x.delivery_tag,
            multiple: x.multiple,
            requeue: x.requeue,
        })),
        Method::BasicReject(x) => AMQPClass::Basic(b::AMQPMethod::Reject(b::Reject {
            delivery_tag: x.delivery_tag,
            requeue: x.requeue,
        })),
        Method::ConfirmSelect(x) => {
            AMQPClass::Confirm(cf::AMQPMethod::Select(cf::Select { nowait: x.nowait }))
        }
        _ => return None,
    })
}

/// amq-protocol has no prefetch-size; ours is zeroed where the two are compared.
fn without_prefetch_size(m: Method) -> Method {
    match m {
        Method::BasicQos(q) => Method::BasicQos(basic::Qos {
            prefetch_size: 0,
            ..q
        }),
        other => other,
    }
}

fn oracle_methods() -> impl Strategy<Value = Method> {
    let chosen: Vec<_> = arbitrary::each_method()
        .into_iter()
        .filter(|(name, _)| ORACLE_SET.contains(name))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        chosen.len(),
        ORACLE_SET.len(),
        "a name in ORACLE_SET is wrong"
    );
    proptest::strategy::Union::new(chosen).prop_map(without_prefetch_size)
}

fn encode(m: &Method) -> Bytes {
    let mut buf = BytesMut::new();
    m.encode(&mut buf);
    buf.freeze()
}

fn amq_parse(bytes: &[u8]) -> Result<AMQPClass, TestCaseError> {
    match amq::parse_class(bytes) {
        Ok(([], class)) => Ok(class),
        Ok((rest, class)) => Err(TestCaseError::fail(format!(
            "amq-protocol left {} bytes after {class:?}",
            rest.len()
        ))),
        Err(e) => Err(TestCaseError::fail(format!("amq-protocol: {e:?}"))),
    }
}

fn amq_gen(class: &AMQPClass) -> Vec<u8> {
    amq::gen_class(class)(WriteContext::from(Vec::new()))
        .expect("amq-protocol encodes")
        .write
}

proptest! {
    #[test]
    fn amq_protocol_reads_our_methods_field_for_field(m in oracle_methods()) {
        let expected = to_amq(&m).expect("in ORACLE_SET");
        prop_assert_eq!(amq_parse(&encode(&m))?, expected);
    }

    #[test]
    fn we_read_amq_protocols_methods_field_for_field(m in oracle_methods()) {
        let theirs = amq_gen(&to_amq(&m).expect("in ORACLE_SET"));
        prop_assert_eq!(Method::decode(Bytes::from(theirs))?, m);
    }

    #[test]
    fn amq_protocol_reads_our_properties_field_for_field(p in arbitrary::basic_properties()) {
        let parsed = match amq::basic::parse_properties(&p.to_raw()[..]) {
            Ok(([], parsed)) => parsed,
            other => return Err(TestCaseError::fail(format!("amq-protocol: {other:?}"))),
        };
        prop_assert_eq!(parsed, props_to_amq(&p));
    }

    #[test]
    fn we_read_amq_protocols_properties_field_for_field(p in arbitrary::basic_properties()) {
        let theirs = amq::basic::gen_properties(&props_to_amq(&p))(WriteContext::from(Vec::new()))
            .expect("amq-protocol encodes")
            .write;
        prop_assert_eq!(BasicProperties::decode(Bytes::from(theirs))?, p);
    }
}

#[test]
fn every_method_is_byte_identical_after_amq_protocol_reencodes_it() {
    for (name, strategy) in arbitrary::each_method() {
        let mut runner = TestRunner::new(Config {
            cases: 16,
            ..Config::default()
        });
        runner
            .run(&strategy.prop_map(without_prefetch_size), |m| {
                let ours = encode(&m);
                let theirs = amq_gen(&amq_parse(&ours)?);
                prop_assert_eq!(&theirs[..], &ours[..]);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn props_to_amq(p: &BasicProperties) -> AMQPProperties {
    let mut out = AMQPProperties::default();
    if let Some(v) = &p.content_type {
        out = out.with_content_type(ss(v));
    }
    if let Some(v) = &p.content_encoding {
        out = out.with_content_encoding(ss(v));
    }
    if let Some(v) = &p.headers {
        out = out.with_headers(table(v));
    }
    if let Some(v) = p.delivery_mode {
        out = out.with_delivery_mode(v);
    }
    if let Some(v) = p.priority {
        out = out.with_priority(v);
    }
    if let Some(v) = &p.correlation_id {
        out = out.with_correlation_id(ss(v));
    }
    if let Some(v) = &p.reply_to {
        out = out.with_reply_to(ss(v));
    }
    if let Some(v) = &p.expiration {
        out = out.with_expiration(ss(v));
    }
    if let Some(v) = &p.message_id {
        out = out.with_message_id(ss(v));
    }
    if let Some(v) = p.timestamp {
        out = out.with_timestamp(v);
    }
    if let Some(v) = &p.kind {
        out = out.with_type(ss(v));
    }
    if let Some(v) = &p.user_id {
        out = out.with_user_id(ss(v));
    }
    if let Some(v) = &p.app_id {
        out = out.with_app_id(ss(v));
    }
    if let Some(v) = &p.cluster_id {
        out = out.with_cluster_id(ss(v));
    }
    out
}

#[test]
fn amq_protocol_reads_every_property_we_set() {
    let raw = all_set().to_raw();
    let (rest, theirs) = amq::basic::parse_properties(&raw[..]).expect("amq-protocol parses");
    assert!(rest.is_empty());
    let s = |v: &Option<at::ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
    assert_eq!(
        s(theirs.content_type()).as_deref(),
        Some("application/json")
    );
    assert_eq!(s(theirs.content_encoding()).as_deref(), Some("gzip"));
    let headers = theirs.headers().as_ref().expect("headers");
    assert_eq!(headers.inner().get("a"), Some(&at::AMQPValue::LongInt(-1)));
    assert_eq!(
        headers.inner().get("b"),
        Some(&at::AMQPValue::LongString("text".into()))
    );
    assert_eq!(*theirs.delivery_mode(), Some(2));
    assert_eq!(*theirs.priority(), Some(9));
    assert_eq!(s(theirs.correlation_id()).as_deref(), Some("corr"));
    assert_eq!(
        s(theirs.reply_to()).as_deref(),
        Some("amq.rabbitmq.reply-to")
    );
    assert_eq!(s(theirs.expiration()).as_deref(), Some("60000"));
    assert_eq!(s(theirs.message_id()).as_deref(), Some("id-1"));
    assert_eq!(*theirs.timestamp(), Some(1_700_000_000));
    assert_eq!(s(theirs.kind()).as_deref(), Some("order.created"));
    assert_eq!(s(theirs.user_id()).as_deref(), Some("guest"));
    assert_eq!(s(theirs.app_id()).as_deref(), Some("warren-test"));
    assert_eq!(s(theirs.cluster_id()).as_deref(), Some("c1"));
}

#[test]
fn amq_protocol_reads_our_content_header_frame() {
    let mut buf = BytesMut::new();
    frame::write_content_header(&mut buf, 5, CLASS_BASIC, 1234, &all_set().to_raw());
    let (rest, parsed) = amq_protocol::frame::parse_frame(&buf[..]).expect("amq-protocol parses");
    assert!(rest.is_empty());
    let amq_protocol::frame::AMQPFrame::Header(channel, class_id, header) = parsed else {
        panic!("not a header frame: {parsed:?}")
    };
    assert_eq!(
        (channel, class_id, header.body_size),
        (5, CLASS_BASIC, 1234)
    );
    assert_eq!(header.properties, props_to_amq(&all_set()));
}

#[test]
fn amq_protocol_reads_our_method_frame() {
    let m: Method = basic::Publish {
        exchange: ShortString::try_from("x").unwrap(),
        routing_key: ShortString::try_from("k").unwrap(),
        mandatory: true,
        immediate: false,
    }
    .into();
    let mut buf = BytesMut::new();
    write_method_frame(&mut buf, 7, &m);
    let (rest, parsed) = amq_protocol::frame::parse_frame(&buf[..]).expect("amq-protocol parses");
    assert!(rest.is_empty());
    assert_eq!(
        parsed,
        amq_protocol::frame::AMQPFrame::Method(7, to_amq(&m).expect("publish"))
    );
}
