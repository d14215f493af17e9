"""The catalogue of Invoiced objects this project replicates: one declarative entry per object.

Everything else (the API resource's listing quirks, the assets, the table shapes, the checks) is
derived from these entries, so adding an object is adding one `InvoicedObject` to `CATALOGUE`.

Fields are written one per line, `name[:type]  Description.`, with the types of `FieldType` (a
bare name is a string). The description is what the UI's column schema and the warehouse's column
comments show analysts (see `tables.docs`): one line, in the words of Invoiced's API reference.
A field written without one takes the shared text of `COMMON_DESCRIPTIONS` (ids, timestamps,
metadata, addresses). Fields the catalogue does not know still reach the warehouse (their type is
inferred from the values, their comment says when schema drift added them); fields it knows always
become typed columns, even when every value in a load is null.
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
    description: str = ""  # one line: what the column holds, for analysts


# Fields many objects share, described once (a catalogue line can still word its own).
COMMON_DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "id": "Unique ID of the record in Invoiced.",
        "object": "Object type: what kind of Invoiced record this is (e.g. `invoice`).",
        "created_at": "When the record was created (UTC).",
        "updated_at": "When the record was last changed (UTC).",
        "metadata": "Custom fields: key/value pairs the business stores on the record (JSON).",
        "customer": "ID of the customer (`customers.id`).",
        "customer_id": "ID of the customer (`customers.id`).",
        "currency": "Currency, as a 3-letter ISO 4217 code (e.g. `usd`).",
        "email": "Email address.",
        "phone": "Phone number.",
        "address1": "First address line.",
        "address2": "Second address line, if any.",
        "city": "City.",
        "state": "State or province.",
        "postal_code": "ZIP or postal code.",
        "country": "Country, as a 2-letter ISO 3166 code (e.g. `US`).",
        "purchase_order": "The customer's purchase order number.",
        "subtotal": "Sum of the line items, before document-level discounts and taxes.",
        "total": "Total of the document: subtotal less discounts, plus taxes.",
        "pdf_url": "Link to download the document as a PDF.",
    }
)


def fields(spec: str) -> tuple[FieldSpec, ...]:
    """Parse one field per line, `name[:type]  Description.`, into field specs.

    A bare name is a string; a field without a description takes its `COMMON_DESCRIPTIONS` text,
    and one with neither is an error (every column the warehouse gets is documented).
    """
    parsed = []
    for line in spec.strip().splitlines():
        token, _, description = line.strip().partition(" ")
        name, _, type_name = token.partition(":")
        description = description.strip() or COMMON_DESCRIPTIONS.get(name, "")
        if not description or description[0].islower():
            raise ValueError(
                f"Field {name!r} has no description: write one field per line,"
                " `name[:type]  Description.` (or add the name to COMMON_DESCRIPTIONS)."
            )
        parsed.append(FieldSpec(name, FieldType(type_name or "string"), description))
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
    # The `type`s an event's `data.object` may have to be one of this object's (empty: any; a
    # subject without a `type` is one): other records share the event name.
    event_types: frozenset[str] = frozenset()
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
    """
    id:integer
    object
    catalog_item            ID of the catalog item the line was filled from, if any (`items.id`).
    type                    Line type (e.g. `product`, `service`, `plan`), to group lines in reports.
    name                    Title of the line.
    description             Optional description of the line.
    quantity:decimal        Quantity.
    unit_cost:decimal       Unit cost or rate.
    amount:decimal          Line amount: quantity times unit cost, before discounts and taxes.
    discountable:boolean    `false` when the line is left out of document-level discounts.
    discounts:json          Discounts applied to this line alone (JSON list).
    taxable:boolean         `false` when the line is left out of document-level taxes.
    taxes:json              Taxes charged on this line alone (JSON list).
    plan                    ID of the subscription plan billed, when `type` is `plan` (`plans.id`).
    metadata:json
    """
)
_DISCOUNT_FIELDS = fields(
    """
    id:integer
    object
    amount:decimal          Discount amount, in the document's currency.
    coupon:json             The coupon the discount was computed from, if any (JSON).
    expires:timestamp       When the discount expires, if it does (UTC).
    """
)
_TAX_FIELDS = fields(
    """
    id:integer
    object
    amount:decimal          Tax amount, in the document's currency.
    tax_rate:json           The tax rate the tax was computed from, if any (JSON).
    """
)


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
        """
        id:integer
        object
        name                        Customer name (a company or a person).
        number                      Customer number, unique: ties the customer to other systems.
        email
        autopay:boolean             `true` when invoices are charged to the saved payment source.
        autopay_delay_days:integer  Days AutoPay waits after an invoice is issued before charging.
        payment_terms               Payment terms used when AutoPay is off, e.g. `NET 30`.
        payment_source:json         The customer's default card or bank account, if any (JSON).
        attention_to                ATTN: line of the billing address, for companies.
        address1
        address2
        city
        state
        postal_code
        country
        language                    Preferred language, as a 2-letter ISO 639-1 code (e.g. `en`).
        currency
        chase:boolean               `true` when Invoiced chases the customer: sends reminders.
        chasing_cadence:integer     ID of the chasing cadence assigned to the customer.
        next_chase_step:integer     ID of the cadence's next chasing step for the customer.
        phone
        credit_hold:boolean         `true` when the customer is on credit hold.
        credit_limit:decimal        Credit limit granted to the customer, in its currency.
        owner:integer               ID of the Invoiced user who owns the account.
        taxable:boolean             `false` when the customer is tax-exempt.
        taxes:json                  Tax rates applied to the customer's documents (JSON list).
        tax_id                      The customer's tax ID, shown on its documents.
        avalara_entity_use_code     Avalara entity use code: the reason for a tax exemption.
        avalara_exemption_number    Tax-exemption certificate number passed to Avalara.
        type                        `company` or `person`.
        parent_customer:integer     ID of the parent account, in a hierarchy (`customers.id`).
        notes                       Private notes about the customer, never shown to it.
        sign_up_page:integer        ID of the sign-up page assigned to the customer.
        sign_up_url                 Link where the customer can buy a subscription (sign-up page).
        statement_pdf_url           Link to download the customer's latest account statement.
        ach_gateway:integer         ID of the gateway configuration processing its ACH payments.
        cc_gateway:integer          ID of the gateway configuration processing its card payments.
        created_at:timestamp
        updated_at:timestamp
        metadata:json
        """
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
        """
        id:integer
        object
        customer:integer            ID of the customer billed (`customers.id`).
        name                        Invoice name for internal use (defaults to "Invoice").
        number                      Invoice number shown on the document, e.g. `INV-0016`.
        autopay:boolean             `true` when the invoice is charged automatically (AutoPay).
        currency
        draft:boolean               `true` while the invoice is a draft; `false` once issued.
        closed:boolean              `true` when closed: written off as bad debt, no more payments.
        paid:boolean                `true` when the invoice has been paid in full.
        status                      `draft`, `not_sent`, `sent`, `viewed`, `past_due`, `pending`, `paid` or `voided`.
        attempt_count:integer       Number of AutoPay payment attempts made.
        next_payment_attempt:timestamp  Next scheduled AutoPay charge attempt, if any (UTC).
        subscription:integer        ID of the subscription that billed the invoice, if any.
        date:timestamp              Invoice date (UTC).
        due_date:timestamp          Date payment is due by (UTC).
        payment_terms               Payment terms of the invoice, e.g. `NET 30`.
        purchase_order
        notes                       Notes printed on the invoice.
        subtotal:decimal
        total:decimal
        balance:decimal             Amount still owed: total less payments and credits; 0 if paid.
        ship_to:json                Shipping address: name, attention to, address (JSON).
        payment_plan:integer        ID of the installment payment plan paying the invoice, if any.
        url                         Link to view the invoice in the customer's billing portal.
        payment_url                 Link to the invoice's payment page.
        pdf_url
        created_at:timestamp
        updated_at:timestamp
        metadata:json
        """
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
        """
        id:integer
        object
        customer:integer            ID of the paying customer (`customers.id`); null if unknown.
        date:timestamp              Payment date (UTC).
        currency
        amount:decimal              Amount received.
        balance:decimal             Unapplied amount: the part not yet applied to any document.
        matched:boolean             `true` when CashMatch has suggested what the payment pays.
        voided:boolean              `true` when the payment was voided.
        method                      Payment method, e.g. `check`, `credit_card`, `ach`, `other`.
        ach_sender_id               ACH PPD ID of the sender, for ACH payments.
        reference                   Reference number, e.g. the check number.
        source                      How the payment was recorded, e.g. `api`, `bank_feed`, `keyed`.
        notes                       Internal notes about the payment.
        charge:json                 The card or bank charge, for payments processed online (JSON).
        pdf_url                     Link to download the payment receipt as a PDF.
        created_at:timestamp
        updated_at:timestamp
        """
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
                """
                amount:decimal      Amount applied.
                type                Applied to: `invoice`, `estimate`, `credit_note`, `credit` (the credit balance), `applied_credit`, `convenience_fee`.
                invoice:integer     ID of the invoice paid, when `type` is `invoice` (`invoices.id`).
                estimate:integer    ID of the estimate paid, when `type` is `estimate`.
                credit_note:integer ID of the credit note applied, when `type` is `credit_note`.
                document_type       `invoice` or `estimate`: what a credit note or credit paid.
                """
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
        """
        id:integer
        object
        customer:integer            ID of the subscribed customer (`customers.id`).
        amount:decimal              Price per period when the plan's pricing mode is `custom`.
        plan                        ID of the plan subscribed to (`plans.id`).
        start_date:timestamp        When the subscription starts or started (UTC).
        bill_in                     `advance` (billed at the start of each period) or `arrears`.
        bill_in_advance_days:integer  Days before a period that its invoice is issued (advance).
        quantity:decimal            Quantity of the plan billed.
        discounts:json              Coupons applied to the subscription (JSON list).
        cycles:integer              Billing cycles the subscription runs for; null: until canceled.
        period_start:timestamp      Start of the current billing period (UTC).
        period_end:timestamp        End of the current billing period (UTC).
        cancel_at_period_end:boolean  `true` when it will be canceled at the current period's end.
        canceled_at:timestamp       When the subscription was canceled, if it was (UTC).
        status                      `not_started`, `active`, `past_due`, `finished` or `canceled`.
        paused:boolean              `true` while the subscription is paused.
        contract_period_start:timestamp  Start of the current contract period (UTC).
        contract_period_end:timestamp  End of the current contract period (UTC).
        contract_renewal_cycles:integer  Billing cycles in the next contract period.
        contract_renewal_mode       At contract end: `auto`, `manual`, `renew_once` or `none`.
        taxes:json                  Tax rates applied to the subscription (JSON list).
        ship_to:json                Shipping address: name, attention to, address (JSON).
        recurring_total:decimal     Amount billed each period, taxes included.
        mrr:decimal                 Monthly recurring revenue (MRR) of the subscription.
        url                         Link to manage the subscription in the billing portal.
        created_at:timestamp
        updated_at:timestamp
        metadata:json
        """
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
                """
                id:integer
                object
                amount:decimal      Add-on price when its plan's pricing mode is `custom`.
                plan                ID of the add-on's plan (`plans.id`).
                quantity:decimal    Quantity of the add-on billed.
                description         Description put on the invoice lines the add-on bills.
                created_at:timestamp
                updated_at:timestamp
                """
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
        """
        id:integer
        object
        customer:integer            ID of the customer credited (`customers.id`).
        name                        Credit note name for internal use (defaults to "Credit Note").
        number                      Credit note number shown on the document, e.g. `CN-0001`.
        purchase_order
        currency
        draft:boolean               `true` while the credit note is a draft; `false` once issued.
        closed:boolean              `true` when the credit note is closed: nothing more applies.
        paid:boolean                `true` when the whole credit has been applied or refunded.
        status                      `draft`, `open`, `paid`, `closed` or `voided`.
        date:timestamp              Credit note date (UTC).
        notes                       Notes printed on the credit note.
        subtotal:decimal
        total:decimal
        balance:decimal             Credit not yet applied to invoices nor refunded.
        url                         Link to view the credit note in the customer's billing portal.
        pdf_url
        created_at:timestamp
        updated_at:timestamp
        metadata:json
        """
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
        """
        id:integer
        object
        customer:integer            ID of the customer quoted (`customers.id`).
        invoice:integer             ID of the invoice the estimate became, if any (`invoices.id`).
        name                        Estimate name for internal use (defaults to "Estimate").
        number                      Estimate number shown on the document, e.g. `EST-0001`.
        currency
        draft:boolean               `true` while the estimate is a draft; `false` once issued.
        closed:boolean              `true` when the estimate is closed.
        approved                    Who approved the estimate (the name they signed), once approved.
        status                      `draft`, `not_sent`, `sent`, `approved`, `invoiced`, `declined` or `voided`.
        date:timestamp              Estimate date (UTC).
        expiration_date:timestamp   When the estimate expires (UTC).
        payment_terms               Payment terms of the estimate, e.g. `NET 30`.
        purchase_order
        notes                       Notes printed on the estimate.
        subtotal:decimal
        ship_to:json                Shipping address: name, attention to, address (JSON).
        total:decimal
        deposit:decimal             Up-front deposit required.
        deposit_paid:boolean        `true` when the deposit has been paid in full.
        url                         Link to view the estimate in the customer's billing portal.
        pdf_url
        created_at:timestamp
        updated_at:timestamp
        metadata:json
        """
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
        """
        id:integer
        object
        customer:integer            ID of the customer whose credit balance changed.
        currency
        amount:decimal              Amount of the adjustment to the credit balance.
        date:timestamp              Adjustment date (UTC).
        notes                       Notes about the adjustment.
        created_at:timestamp
        updated_at:timestamp
        """
    ),
    event_object="transaction",  # its events are named transaction.*
    # The service names every transaction outside a payment `transaction.*`: refunds, charges
    # and payments too, whose `type` says so (chriscouch/invoiced-mcp, TransactionTest).
    event_types=frozenset({"adjustment"}),
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
        """
        id                          Plan ID, chosen by the business (e.g. `starter`).
        object
        name                        Plan name.
        currency
        amount:decimal              Price per unit and interval; unused in `custom` pricing mode.
        interval                    Billing frequency: `day`, `week`, `month` or `year`.
        interval_count:integer      Intervals between two billings (3 with `month`: quarterly).
        catalog_item                ID of the catalog item the plan belongs to (`items.id`).
        pricing_mode                How the price is computed: `per_unit`, `volume`, `tiered` or `custom`.
        quantity_type               `constant` (a set quantity) or `usage` (metered).
        archived:boolean            `true` when the plan has been archived.
        created_at:timestamp
        updated_at:timestamp
        metadata:json
        """
    ),
    children=(
        ChildTable(
            "plan_tiers",
            "tiers",
            "plan_id",
            "One row per price tier of each tiered plan.",
            fields(
                """
                min_qty:decimal     Lowest quantity of the tier (null: from the first unit).
                max_qty:decimal     Highest quantity of the tier (null: no upper limit).
                unit_cost:decimal   Price per unit within the tier.
                """
            ),
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
        """
        id                          Item ID, chosen by the business (e.g. `delivery`).
        object
        name                        Item name.
        currency
        unit_cost:decimal           Unit cost or rate.
        description                 Optional description.
        type                        Line type its lines get (e.g. `product`, `service`), for reports.
        taxes:json                  Tax rates applied to the item (JSON list).
        gl_account                  General ledger account code.
        discountable:boolean        `false` when the item is left out of discounts.
        taxable:boolean             `false` when the item is left out of taxes.
        avalara_tax_code            Avalara tax code of the item.
        avalara_location_code       Avalara location code, if any.
        archived:boolean            `true` when the item has been archived.
        created_at:timestamp
        updated_at:timestamp
        metadata:json
        """
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
        """
        id                          Coupon code, chosen by the business.
        object
        name                        Coupon name.
        currency
        value:decimal               Discount: a percentage if `is_percent`, else an amount.
        is_percent:boolean          `true` when `value` is a percentage.
        exclusive:boolean           `true` when no other coupon can be used with this one.
        expiration_date:timestamp   When the coupon expires, if it does (UTC).
        max_redemptions:integer     Most times the coupon can be used.
        created_at:timestamp
        updated_at:timestamp
        metadata:json
        """
    ),
    incremental=False,
    group="catalog",
)

TAX_RATES = InvoicedObject(
    name="tax_rates",
    endpoint="/tax_rates",
    description="Tax rates: a fixed or percentage value, and whether prices include the tax.",
    fields=fields(
        """
        id                          Tax rate ID, chosen by the business.
        object
        name                        Tax rate name.
        currency
        value:decimal               Rate: a percentage if `is_percent`, else a fixed amount.
        is_percent:boolean          `true` when `value` is a percentage.
        inclusive:boolean           `true` when prices include the tax (tax-inclusive pricing).
        created_at:timestamp
        updated_at:timestamp
        metadata:json
        """
    ),
    incremental=False,
    group="catalog",
)

NOTES = InvoicedObject(
    name="notes",
    endpoint="/notes",
    description="Collection notes written on customers and invoices, with who wrote them.",
    fields=fields(
        """
        id:integer
        object
        customer:integer            ID of the customer the note is about (`customers.id`).
        invoice:integer             ID of the invoice the note is about, if any (`invoices.id`).
        notes                       Text of the note.
        user:json                   The Invoiced user who wrote the note (JSON).
        created_at:timestamp
        updated_at:timestamp
        """
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
        """
        id:integer
        action                      What to do: `phone`, `letter`, `email` or `review`.
        name                        Task name.
        customer_id:integer         ID of the customer the task is about (`customers.id`).
        user_id:integer             ID of the Invoiced user the task is assigned to.
        due_date:timestamp          When the task is due (UTC).
        complete:boolean            `true` once the task is done.
        completed_date:timestamp    When the task was marked complete (UTC).
        completed_by_user_id:integer  ID of the Invoiced user who completed the task.
        chase_step_id:integer       ID of the chasing step that created the task, if any.
        created_at:timestamp
        updated_at:timestamp
        """
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
        """
        id:integer
        object
        customer_id:integer         ID of the customer the contact belongs to (`customers.id`).
        name                        Contact name.
        title                       Job title.
        email
        phone
        primary:boolean             `true` when the contact is copied on all account messages.
        sms_enabled:boolean         `true` when the contact may be sent text messages.
        department                  Department.
        address1
        address2
        city
        state
        postal_code
        country
        created_at:timestamp
        updated_at:timestamp
        """
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
        """
        id:integer                  ID of the card or bank account.
        object                      `card` or `bank_account`: which kind of source this is.
        customer:integer            ID of the customer the source belongs to (set by the sync).
        brand                       Card brand, e.g. `Visa` (cards).
        last4                       Last 4 digits of the card or bank account number.
        exp_month:integer           Expiry month of the card (cards).
        exp_year:integer            Expiry year of the card (cards).
        funding                     Card funding: `credit`, `debit`, `prepaid` or `unknown`.
        bank_name                   Name of the bank (bank accounts).
        routing_number              Bank routing number (bank accounts).
        verified:boolean            `true` when the bank account has been verified.
        currency
        chargeable:boolean          `false` when the source can no longer be charged.
        failure_reason              Why the source can no longer be charged, if it cannot.
        gateway                     Payment gateway the source is kept at, e.g. `stripe`.
        gateway_id                  ID of the source at its payment gateway.
        merchant_account:integer    ID of the merchant account the source is charged through.
        receipt_email               Email address payment receipts are sent to, if any.
        created_at:timestamp
        updated_at:timestamp
        """
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
    fields=fields(
        """
        id:integer                  ID of the event; later events have higher IDs.
        object
        type                        What happened, `<object>.<action>`: e.g. `invoice.paid`.
        timestamp:timestamp         When it happened (UTC).
        data_object:json            The object as the event left it, related objects expanded (JSON).
        data_previous:json          For updates, the old values of the fields that changed (JSON).
        """
    ),
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
