-- Sales schema of the original SIPREMS system, kept compatible (same tables, columns, types).

CREATE TABLE products (
    product_id  serial PRIMARY KEY,
    name        varchar(255) NOT NULL,
    category    varchar(100),
    variation   varchar(100),
    price       numeric(12, 2) NOT NULL CHECK (price >= 0),
    stock       integer NOT NULL DEFAULT 0,
    sku         varchar(64) NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE transactions (
    transaction_id    bigserial PRIMARY KEY,
    product_id        integer NOT NULL REFERENCES products (product_id) ON DELETE CASCADE,
    quantity_sold     integer NOT NULL CHECK (quantity_sold >= 0),
    price_per_unit    numeric(12, 2) NOT NULL CHECK (price_per_unit >= 0),
    transaction_date  timestamptz NOT NULL DEFAULT now(),
    is_promo          boolean NOT NULL DEFAULT false
);

-- The per-SKU daily series reads only these columns: an index-only scan, in date order.
CREATE INDEX transactions_product_date_idx
    ON transactions (product_id, transaction_date) INCLUDE (quantity_sold, is_promo);

CREATE TABLE events (
    event_id               serial PRIMARY KEY,
    event_name             varchar(255) NOT NULL,
    event_date             date NOT NULL,
    type                   varchar(20) NOT NULL
                           CHECK (type IN ('holiday', 'promotion', 'seasonal', 'custom')),
    description            text,
    include_in_prediction  boolean NOT NULL DEFAULT true
);

CREATE INDEX events_prediction_date_idx ON events (event_date) WHERE include_in_prediction;
