"""The catalogue of Invoiced objects this project replicates: one declarative entry per object.

Everything else (the API resource's listing quirks, the assets, the table shapes, the checks) is
derived from these entries, so adding an object is adding one `InvoicedObject` to `CATALOGUE`.

Field types are written as compact specs, `"name:type"`, with the types of `FieldType`; a bare
name is a string. Fields the catalogue does not know still reach the warehouse (their type is
inferred from the values); fields it knows always become typed columns, even when every value
in a load is null.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class FieldType(StrEnum):
    """The logical type of a field; destinations map each to a column type."""

    INTEGER = "integer"
    STRING = "string"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"  # UNIX seconds in the API, a UTC timestamp in the warehouse
    DECIMAL = "decimal"  # money and quantities: exact, never a binary float
    JSON = "json"  # nested objects and lists, kept exactly as the API sent them


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: FieldType


def fields(spec: str) -> tuple[FieldSpec, ...]:
    """Parse `"id:integer name created_at:timestamp"` into field specs (bare names are strings)."""
    parsed = []
    for token in spec.split():
        name, _, type_name = token.partition(":")
        parsed.append(FieldSpec(name, FieldType(type_name or "string")))
    return tuple(parsed)


@dataclass(frozen=True)
class ChildTable:
    """A list nested in each parent record, unnested into a table of its own.

    Rows carry `<parent>_id` (the parent's primary key) and `position` (the index in the list),
    which together are the child table's key: some nested lists (payment applications) have no
    id of their own, and an id is only unique within its parent for others.
    """

    name: str
    source_field: str
    parent_key_column: str
    description: str
    fields: tuple[FieldSpec, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.parent_key_column, "position")


@dataclass(frozen=True, eq=False)  # entries are singletons: identity is equality (and hash)
class InvoicedObject:
    """One Invoiced listing, replicated as one table (plus its child tables)."""

    name: str  # table and asset name, e.g. "invoices"
    endpoint: str  # list endpoint, e.g. "/invoices"
    description: str
    fields: tuple[FieldSpec, ...]
    primary_key: str = "id"
    # Parameters every listing of this object needs to be complete (the service's quirks).
    list_params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    children: tuple[ChildTable, ...] = ()
    # The field that start_date / end_date filter on, if the listing accepts them (lets a
    # long listing be split into date windows read side by side).
    date_field: str | None = None
    # The object's name in event types (`<event_object>.deleted`); None: emits no events.
    event_object: str | None = None
    # Accepts `updated_after`, so an incremental sync can list only what changed.
    incremental: bool = True
    # The asset group the object's tables are shown in.
    group: str = "billing"
    # Listings that together hold every record (plans and items hide archived rows unless
    # asked for them, and then list only those): each is walked, their union is the table.
    list_variants: tuple[Mapping[str, str], ...] = (MappingProxyType({}),)
    # Listed once per customer: the endpoint holds `{customer}`. Rows that do not name their
    # customer (payment sources) get `customer_column` set to the customer listed.
    per_customer: bool = False
    # The column naming each record's customer (contacts and tasks call it `customer_id`).
    customer_column: str = "customer"
    # False: the service sends every record on every page (payment sources): read one page.
    sliced_pages: bool = True
    # Column -> object: the service deletes the record, without an event, when the record of
    # that object the column names is deleted (a customer's contacts, an invoice's notes).
    deleted_with: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Nested objects whose keys become columns `<field>_<key>` (events' `data`).
    flatten: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    # Append-only, newest first, read incrementally by id (events).
    append_only: bool = False

    @property
    def date_filterable(self) -> bool:
        return self.date_field is not None

    @property
    def field_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    @property
    def refers_to_customers(self) -> bool:
        """Whether each record names a customer (the customers themselves do not)."""
        return self.customer_column in self.field_names

    def list_endpoint(self, customer: Any = None) -> str:
        return self.endpoint.format(customer=customer) if self.per_customer else self.endpoint

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Pickled by name (entries are singletons, compared by identity): an extraction worker
        # hands back the same entry.
        return get_object, (self.name,)


# Shapes shared by invoices, credit notes and estimates.
_LINE_ITEM_FIELDS = fields(
    "id:integer object catalog_item type name description quantity:decimal unit_cost:decimal"
    " amount:decimal discountable:boolean discounts:json taxable:boolean taxes:json plan"
    " metadata:json"
)
_DISCOUNT_FIELDS = fields("id:integer object amount:decimal coupon:json expires:timestamp")
_TAX_FIELDS = fields("id:integer object amount:decimal tax_rate:json")


def _document_children(singular: str, plural: str) -> tuple[ChildTable, ...]:
    """Line items, discounts and taxes of a billing document (invoice, credit note, estimate)."""
    parent = f"{singular}_id"
    return (
        ChildTable(
            f"{singular}_line_items",
            "items",
            parent,
            f"One row per line item of each {singular.replace('_', ' ')}, in document order.",
            _LINE_ITEM_FIELDS,
        ),
        ChildTable(
            f"{singular}_discounts",
            "discounts",
            parent,
            f"Document-level discounts applied to {plural.replace('_', ' ')}.",
            _DISCOUNT_FIELDS,
        ),
        ChildTable(
            f"{singular}_taxes",
            "taxes",
            parent,
            f"Document-level taxes charged on {plural.replace('_', ' ')}.",
            _TAX_FIELDS,
        ),
    )


CUSTOMERS = InvoicedObject(
    name="customers",
    group="customers",
    endpoint="/customers",
    description=(
        "Every customer (account) billed in Invoiced: contact and billing address, payment terms,"
        " AutoPay and chasing settings, credit limit and hold, tax settings, and custom metadata."
    ),
    fields=fields(
        "id:integer object name number email autopay:boolean autopay_delay_days:integer"
        " payment_terms payment_source:json attention_to address1 address2 city state"
        " postal_code country language currency chase:boolean chasing_cadence:integer"
        " next_chase_step:integer phone credit_hold:boolean credit_limit:decimal owner:integer"
        " taxable:boolean taxes:json tax_id avalara_entity_use_code avalara_exemption_number type"
        " parent_customer:integer notes sign_up_page:integer sign_up_url statement_pdf_url"
        " ach_gateway:integer cc_gateway:integer created_at:timestamp updated_at:timestamp"
        " metadata:json"
    ),
    event_object="customer",
)

INVOICES = InvoicedObject(
    name="invoices",
    endpoint="/invoices",
    description=(
        "Every invoice, drafts and voided ones included: customer, dates, status, totals and"
        " open balance. Line items, discounts and taxes are in their own tables."
    ),
    fields=fields(
        "id:integer object customer:integer name number autopay:boolean currency draft:boolean"
        " closed:boolean paid:boolean status attempt_count:integer"
        " next_payment_attempt:timestamp subscription:integer date:timestamp due_date:timestamp"
        " payment_terms purchase_order notes subtotal:decimal total:decimal balance:decimal"
        " ship_to:json payment_plan:integer url"
        " payment_url pdf_url created_at:timestamp updated_at:timestamp metadata:json"
    ),
    children=_document_children("invoice", "invoices"),
    date_field="date",
    event_object="invoice",
)

PAYMENTS = InvoicedObject(
    name="payments",
    endpoint="/payments",
    description=(
        "Every payment received, applied or not: amount, unapplied balance, method, reference and"
        " the card or bank charge. How each payment was applied is in `payment_applications`."
    ),
    fields=fields(
        "id:integer object customer:integer date:timestamp currency amount:decimal"
        " balance:decimal matched:boolean voided:boolean method ach_sender_id reference source"
        " notes charge:json pdf_url created_at:timestamp updated_at:timestamp"
    ),
    # The listing omits applications unless asked for them.
    list_params=MappingProxyType({"include": "applied_to"}),
    children=(
        ChildTable(
            "payment_applications",
            "applied_to",
            "payment_id",
            "How each payment was applied: to invoices, estimates, credit notes, credits, fees.",
            fields(
                "amount:decimal type invoice:integer estimate:integer credit_note:integer"
                " document_type"
            ),
        ),
    ),
    date_field="date",
    event_object="payment",
)

SUBSCRIPTIONS = InvoicedObject(
    name="subscriptions",
    endpoint="/subscriptions",
    description=(
        "Every subscription, including canceled and finished ones: plan, quantity, billing"
        " period, contract terms, status, recurring total and MRR. Add-ons are in"
        " `subscription_addons`."
    ),
    fields=fields(
        "id:integer object customer:integer amount:decimal plan start_date:timestamp bill_in"
        " bill_in_advance_days:integer quantity:decimal discounts:json"
        " cycles:integer period_start:timestamp period_end:timestamp"
        " cancel_at_period_end:boolean canceled_at:timestamp status paused:boolean"
        " contract_period_start:timestamp contract_period_end:timestamp"
        " contract_renewal_cycles:integer contract_renewal_mode taxes:json ship_to:json"
        " recurring_total:decimal mrr:decimal url created_at:timestamp updated_at:timestamp"
        " metadata:json"
    ),
    # Without all=1 the listing silently hides canceled and finished subscriptions.
    list_params=MappingProxyType({"all": "1"}),
    children=(
        ChildTable(
            "subscription_addons",
            "addons",
            "subscription_id",
            "Add-ons billed with each subscription.",
            fields(
                "id:integer object amount:decimal plan quantity:decimal description"
                " created_at:timestamp updated_at:timestamp"
            ),
        ),
    ),
    event_object="subscription",
)

CREDIT_NOTES = InvoicedObject(
    name="credit_notes",
    endpoint="/credit_notes",
    description=(
        "Every credit note issued to customers: dates, status, totals and unapplied balance."
        " Line items, discounts and taxes are in their own tables."
    ),
    fields=fields(
        "id:integer object customer:integer name number purchase_order currency draft:boolean"
        " closed:boolean paid:boolean status date:timestamp notes subtotal:decimal total:decimal"
        " balance:decimal url pdf_url"
        " created_at:timestamp updated_at:timestamp metadata:json"
    ),
    children=_document_children("credit_note", "credit_notes"),
    date_field="date",
    event_object="credit_note",
)

ESTIMATES = InvoicedObject(
    name="estimates",
    endpoint="/estimates",
    description=(
        "Every estimate (quote): dates, expiry, approval status, totals and deposit, and the"
        " invoice it became. Line items, discounts and taxes are in their own tables."
    ),
    fields=fields(
        "id:integer object customer:integer invoice:integer name number currency draft:boolean"
        " closed:boolean approved status date:timestamp expiration_date:timestamp"
        " payment_terms purchase_order notes subtotal:decimal ship_to:json total:decimal"
        " deposit:decimal deposit_paid:boolean url pdf_url"
        " created_at:timestamp updated_at:timestamp metadata:json"
    ),
    children=_document_children("estimate", "estimates"),
    date_field="date",
    event_object="estimate",
)

CREDIT_BALANCE_ADJUSTMENTS = InvoicedObject(
    name="credit_balance_adjustments",
    endpoint="/credit_balance_adjustments",
    description=(
        "Manual adjustments of customers' credit balances: amount, currency, date and notes."
    ),
    # The reference calls the id a string; the service sends integers. Drift handling widens
    # the column to text if strings ever arrive.
    fields=fields(
        "id:integer object customer:integer currency amount:decimal date:timestamp notes"
        " created_at:timestamp updated_at:timestamp"
    ),
    event_object="transaction",  # its events are named transaction.*
)

_ARCHIVED_TOO = (MappingProxyType({}), MappingProxyType({"archived": "1"}))

PLANS = InvoicedObject(
    name="plans",
    endpoint="/plans",
    description=(
        "Subscription plans, archived ones included: price, billing interval, pricing mode."
        " Tiers of tiered plans are in `plan_tiers`. Ids are chosen by the business."
    ),
    fields=fields(
        "id object name currency amount:decimal interval interval_count:integer catalog_item"
        " pricing_mode quantity_type archived:boolean created_at:timestamp updated_at:timestamp"
        " metadata:json"
    ),
    children=(
        ChildTable(
            "plan_tiers",
            "tiers",
            "plan_id",
            "One row per price tier of each tiered plan.",
            fields("min_qty:decimal max_qty:decimal unit_cost:decimal"),
        ),
    ),
    incremental=False,  # ignores updated_after and emits no events: always read in full
    group="catalog",
    list_variants=_ARCHIVED_TOO,
)

ITEMS = InvoicedObject(
    name="items",
    endpoint="/items",
    description="Catalog items (products and services), archived ones included: unit cost, taxes.",
    fields=fields(
        "id object name currency unit_cost:decimal description type taxes:json gl_account"
        " discountable:boolean taxable:boolean avalara_tax_code avalara_location_code"
        " archived:boolean created_at:timestamp updated_at:timestamp metadata:json"
    ),
    incremental=False,
    group="catalog",
    list_variants=_ARCHIVED_TOO,
)

COUPONS = InvoicedObject(
    name="coupons",
    endpoint="/coupons",
    description="Coupons: a fixed or percentage value, exclusivity, expiry and redemption limit.",
    fields=fields(
        "id object name currency value:decimal is_percent:boolean exclusive:boolean"
        " expiration_date:timestamp max_redemptions:integer created_at:timestamp"
        " updated_at:timestamp metadata:json"
    ),
    incremental=False,
    group="catalog",
)

TAX_RATES = InvoicedObject(
    name="tax_rates",
    endpoint="/tax_rates",
    description="Tax rates: a fixed or percentage value, and whether prices include the tax.",
    fields=fields(
        "id object name currency value:decimal is_percent:boolean inclusive:boolean"
        " created_at:timestamp updated_at:timestamp metadata:json"
    ),
    incremental=False,
    group="catalog",
)

NOTES = InvoicedObject(
    name="notes",
    endpoint="/notes",
    description="Collection notes written on customers and invoices, with who wrote them.",
    fields=fields(
        "id:integer object customer:integer invoice:integer notes user:json"
        " created_at:timestamp updated_at:timestamp"
    ),
    event_object="note",
    group="collections",
    deleted_with=MappingProxyType({"customer": "customers", "invoice": "invoices"}),
)

TASKS = InvoicedObject(
    name="tasks",
    endpoint="/tasks",
    description="Collection tasks (calls, letters, reviews) on customers: due date, completion.",
    fields=fields(
        "id:integer action name customer_id:integer user_id:integer due_date:timestamp"
        " complete:boolean completed_date:timestamp completed_by_user_id:integer"
        " chase_step_id:integer created_at:timestamp updated_at:timestamp"
    ),
    event_object="task",
    group="collections",
    customer_column="customer_id",
    deleted_with=MappingProxyType({"customer_id": "customers"}),
)

CONTACTS = InvoicedObject(
    name="contacts",
    endpoint="/customers/{customer}/contacts",
    description="Contacts of each customer: name, title, email, phone, address, primary flag.",
    fields=fields(
        "id:integer object customer_id:integer name title email phone primary:boolean"
        " sms_enabled:boolean department address1 address2 city state postal_code country"
        " created_at:timestamp updated_at:timestamp"
    ),
    event_object="contact",
    group="customers",
    per_customer=True,
    customer_column="customer_id",
    deleted_with=MappingProxyType({"customer_id": "customers"}),
)

PAYMENT_SOURCES = InvoicedObject(
    name="payment_sources",
    endpoint="/customers/{customer}/payment_sources",
    description=(
        "Saved payment sources of each customer, hidden ones (that can no longer be charged)"
        " included: cards (`object` card: brand, last 4, expiry, funding) and bank accounts"
        " (`object` bank_account: bank, last 4, routing number, verified, currency)."
        " `chargeable` and `failure_reason` say why a source stopped working."
    ),
    fields=fields(
        "id:integer object customer:integer brand last4 exp_month:integer exp_year:integer"
        " funding bank_name routing_number verified:boolean currency chargeable:boolean"
        " failure_reason gateway gateway_id merchant_account:integer receipt_email"
        " created_at:timestamp updated_at:timestamp"
    ),
    # Without include_hidden=1 the listing silently leaves out sources that cannot be charged.
    list_params=MappingProxyType({"include_hidden": "1"}),
    event_object="payment_source",
    group="customers",
    per_customer=True,
    sliced_pages=False,
    deleted_with=MappingProxyType({"customer": "customers"}),
)

EVENTS = InvoicedObject(
    name="events",
    endpoint="/events",
    description=(
        "The account's activity log, append-only: every create, update and delete, with the"
        " object as it was (`data_object`) and, for updates, its previous values"
        " (`data_previous`)."
    ),
    fields=fields("id:integer object type timestamp:timestamp data_object:json data_previous:json"),
    group="activity",
    date_field="timestamp",
    flatten=MappingProxyType({"data": ("object", "previous")}),
    append_only=True,
)

CATALOGUE: tuple[InvoicedObject, ...] = (
    CUSTOMERS,
    INVOICES,
    PAYMENTS,
    SUBSCRIPTIONS,
    CREDIT_NOTES,
    ESTIMATES,
    CREDIT_BALANCE_ADJUSTMENTS,
    PLANS,
    ITEMS,
    COUPONS,
    TAX_RATES,
    NOTES,
    TASKS,
    CONTACTS,
    PAYMENT_SOURCES,
    EVENTS,
)

OBJECTS_BY_NAME: Mapping[str, InvoicedObject] = MappingProxyType({o.name: o for o in CATALOGUE})


def get_object(name: str) -> InvoicedObject:
    """The catalogue entry named `name`, or an error listing the known names."""
    try:
        return OBJECTS_BY_NAME[name]
    except KeyError:
        known = ", ".join(OBJECTS_BY_NAME)
        raise KeyError(f"Unknown Invoiced object {name!r}; known objects: {known}") from None
