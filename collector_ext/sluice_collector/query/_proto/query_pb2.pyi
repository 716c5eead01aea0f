from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Order(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NEWEST_FIRST: _ClassVar[Order]
    OLDEST_FIRST: _ClassVar[Order]

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JSONL: _ClassVar[ExportFormat]
    CSV: _ClassVar[ExportFormat]
    TXT: _ClassVar[ExportFormat]

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[Compression]
    GZIP: _ClassVar[Compression]
    ZIP: _ClassVar[Compression]
NEWEST_FIRST: Order
OLDEST_FIRST: Order
JSONL: ExportFormat
CSV: ExportFormat
TXT: ExportFormat
NONE: Compression
GZIP: Compression
ZIP: Compression

class Filter(_message.Message):
    __slots__ = ("since_unix_nano", "until_unix_nano", "severity_at_least", "categories", "services", "trace_id", "user_id", "event_type", "attribute_equals", "text", "regex", "tenant", "include_reads")
    class AttributeEqualsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SINCE_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_AT_LEAST_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_EQUALS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REGEX_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_READS_FIELD_NUMBER: _ClassVar[int]
    since_unix_nano: int
    until_unix_nano: int
    severity_at_least: int
    categories: _containers.RepeatedScalarFieldContainer[str]
    services: _containers.RepeatedScalarFieldContainer[str]
    trace_id: str
    user_id: str
    event_type: str
    attribute_equals: _containers.ScalarMap[str, str]
    text: str
    regex: str
    tenant: str
    include_reads: bool
    def __init__(self, since_unix_nano: _Optional[int] = ..., until_unix_nano: _Optional[int] = ..., severity_at_least: _Optional[int] = ..., categories: _Optional[_Iterable[str]] = ..., services: _Optional[_Iterable[str]] = ..., trace_id: _Optional[str] = ..., user_id: _Optional[str] = ..., event_type: _Optional[str] = ..., attribute_equals: _Optional[_Mapping[str, str]] = ..., text: _Optional[str] = ..., regex: _Optional[str] = ..., tenant: _Optional[str] = ..., include_reads: _Optional[bool] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("filter", "limit", "page_token", "order")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    filter: Filter
    limit: int
    page_token: str
    order: Order
    def __init__(self, filter: _Optional[_Union[Filter, _Mapping]] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ..., order: _Optional[_Union[Order, str]] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("time_unix_nano", "category", "line")
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    time_unix_nano: int
    category: str
    line: str
    def __init__(self, time_unix_nano: _Optional[int] = ..., category: _Optional[str] = ..., line: _Optional[str] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("filter", "bucket_seconds")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    filter: Filter
    bucket_seconds: int
    def __init__(self, filter: _Optional[_Union[Filter, _Mapping]] = ..., bucket_seconds: _Optional[int] = ...) -> None: ...

class Count(_message.Message):
    __slots__ = ("key", "count")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    key: str
    count: int
    def __init__(self, key: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class Bucket(_message.Message):
    __slots__ = ("start_unix_nano", "count", "errors")
    START_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    start_unix_nano: int
    count: int
    errors: int
    def __init__(self, start_unix_nano: _Optional[int] = ..., count: _Optional[int] = ..., errors: _Optional[int] = ...) -> None: ...

class SeriesPoint(_message.Message):
    __slots__ = ("start_unix_nano", "key", "count")
    START_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    start_unix_nano: int
    key: str
    count: int
    def __init__(self, start_unix_nano: _Optional[int] = ..., key: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("total", "by_category", "by_severity", "by_event_type", "by_status", "unique_users", "error_rate", "avg_duration_ms", "with_duration", "bucket_seconds", "buckets", "by_service", "category_buckets", "severity_buckets")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BY_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BY_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    BY_EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_USERS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    AVG_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    WITH_DURATION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    BY_SERVICE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    total: int
    by_category: _containers.RepeatedCompositeFieldContainer[Count]
    by_severity: _containers.RepeatedCompositeFieldContainer[Count]
    by_event_type: _containers.RepeatedCompositeFieldContainer[Count]
    by_status: _containers.RepeatedCompositeFieldContainer[Count]
    unique_users: int
    error_rate: float
    avg_duration_ms: float
    with_duration: int
    bucket_seconds: int
    buckets: _containers.RepeatedCompositeFieldContainer[Bucket]
    by_service: _containers.RepeatedCompositeFieldContainer[Count]
    category_buckets: _containers.RepeatedCompositeFieldContainer[SeriesPoint]
    severity_buckets: _containers.RepeatedCompositeFieldContainer[SeriesPoint]
    def __init__(self, total: _Optional[int] = ..., by_category: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., by_severity: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., by_event_type: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., by_status: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., unique_users: _Optional[int] = ..., error_rate: _Optional[float] = ..., avg_duration_ms: _Optional[float] = ..., with_duration: _Optional[int] = ..., bucket_seconds: _Optional[int] = ..., buckets: _Optional[_Iterable[_Union[Bucket, _Mapping]]] = ..., by_service: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., category_buckets: _Optional[_Iterable[_Union[SeriesPoint, _Mapping]]] = ..., severity_buckets: _Optional[_Iterable[_Union[SeriesPoint, _Mapping]]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("filter", "format", "compression", "order", "max_records")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    filter: Filter
    format: ExportFormat
    compression: Compression
    order: Order
    max_records: int
    def __init__(self, filter: _Optional[_Union[Filter, _Mapping]] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., compression: _Optional[_Union[Compression, str]] = ..., order: _Optional[_Union[Order, str]] = ..., max_records: _Optional[int] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class TailRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: Filter
    def __init__(self, filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class TailResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...
